#!/usr/bin/env python
"""Train and/or test a video model: python tools/run_net.py --cfg FILE [--opts KEY VALUE ...]"""

import os
import sys

# Back large CPU tensors (the 30 test views of a video) with huge pages; PyTorch
# reads this once, at import, so it must be set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from video_gc.engine.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
