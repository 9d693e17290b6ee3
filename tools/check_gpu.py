"""Check video_gc's CUDA path on a machine with a GPU and measure it (see video_gc.bench.gpu).

    bash tools/check_gpu.sh OUT                          # installs the wheels in .whl/ (if any), then this
    python tools/check_gpu.py OUT
    python tools/check_gpu.py --device cpu --quick OUT   # every section end to end at tiny sizes, no GPU
"""

import os
import sys

# The GPU machine runs this from a bare checkout (no pip install of video_gc).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from video_gc.bench.gpu import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
