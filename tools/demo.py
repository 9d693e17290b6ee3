#!/usr/bin/env python
"""`make demo`: synthetic dataset -> train a narrow Slow R50 + GC on the CPU -> 30-view test.

python tools/demo.py [--cfg configs/demo/SLOW_GC_DEMO.yaml] [--output output/demo] [--resume] [--opts KEY VALUE ...]
The last line printed is the path of test_metrics.json.
"""

import sys

from video_gc.demo import main_demo

if __name__ == "__main__":
    sys.exit(main_demo())
