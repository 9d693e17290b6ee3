"""Dataset preparation: resized videos plus PySlowFast-style lists.

Every dataset is written in one layout, ``DIR/videos/...``, ``DIR/{train,val,test}.csv``
(lines ``relative/path.mp4 label``, paths relative to the folder that holds the list)
and ``DIR/classids.json``, so ``DATA.PATH_TO_DATA_DIR: DIR`` with an empty
``DATA.PATH_PREFIX`` is all a config needs.
"""

from video_gc.prep.lists import PrepError

__all__ = ["PrepError"]
