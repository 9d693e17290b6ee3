#!/usr/bin/env python
"""Attention maps over the frames: python tools/visualize_context.py --cfg FILE --output DIR [--video F | --index I]"""

import sys

from video_gc.analysis.cli import main_visualize

if __name__ == "__main__":
    sys.exit(main_visualize())
