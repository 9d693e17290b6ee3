#!/usr/bin/env python
"""Train and/or test a video model: python tools/run_net.py --cfg FILE [--opts KEY VALUE ...]"""

import sys

from video_gc.engine.launch import main

if __name__ == "__main__":
    sys.exit(main())
