#!/usr/bin/env python
"""GCNet Table 1 statistics: python tools/analyze_context.py --cfg FILE [--checkpoint F] [--num-videos N]"""

import sys

from video_gc.analysis.cli import main_analyze

if __name__ == "__main__":
    sys.exit(main_analyze())
