"""Pretrained weights: ImageNet 2D ResNets inflated to 3D, model-zoo import and export.

    from video_gc.models.weights import load_pretrained, import_weights, export_pytorchvideo
    report = load_pretrained(model, cfg)            # TRAIN.CHECKPOINT_* keys
    report = import_weights(model, "R-50.pkl", inflate_mode="center")
    print(report.format())

Supported files: torchvision ResNet state dicts, Caffe2/Detectron pickles,
PySlowFast and PyTorchVideo checkpoints, video_gc checkpoints. Torch files load
with ``weights_only=True``; pickles with an unpickler that admits only plain
containers and numpy arrays.
"""

from .caffe2_pickle import load_caffe2_pickle
from .formats import FORMATS, SourceWeights, detect_format, load_source, read_checkpoint, require_finite
from .inflate import INFLATE_MODES, inflate_kernel
from .loader import apply_weights, import_weights, load_pretrained
from .pytorchvideo_io import PYTORCHVIDEO_BUILDERS, export_pytorchvideo, pytorchvideo_builder
from .report import LoadReport

__all__ = [
    "FORMATS",
    "INFLATE_MODES",
    "LoadReport",
    "PYTORCHVIDEO_BUILDERS",
    "SourceWeights",
    "apply_weights",
    "detect_format",
    "export_pytorchvideo",
    "import_weights",
    "inflate_kernel",
    "load_caffe2_pickle",
    "load_pretrained",
    "load_source",
    "pytorchvideo_builder",
    "read_checkpoint",
    "require_finite",
]
