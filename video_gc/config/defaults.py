"""Default configuration.

Key names follow PySlowFast wherever the concept exists there, so PySlowFast
Kinetics YAMLs for SLOW / C2D / *_NLN load unchanged. Concepts PySlowFast does
not have live in their own sections: CONTEXT (GCNet framework, SE, CGD, NA) and
the few extra keys marked "video_gc" below. Keys marked "compatibility only"
load and are never used; a run names those set to a non-default value at start.
"""

from fvcore.common.config import CfgNode

_C = CfgNode()

# video_gc: the meaning of the keys below, raised when one changes. Every run's config.yaml
# records it, so a config written by an earlier video_gc is read as it was meant.
_C.CONFIG_VERSION = 2

# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
# Compatibility only (video_gc.config.compat): one Kinetics-style CSV dataset serves every split.
_C.TRAIN.DATASET = "kinetics"
_C.TRAIN.BATCH_SIZE = 64
_C.TRAIN.EVAL_PERIOD = 10
_C.TRAIN.CHECKPOINT_PERIOD = 1
_C.TRAIN.AUTO_RESUME = True
# video_gc: a fresh run (TRAIN.AUTO_RESUME False, or no checkpoint that loads) into an OUTPUT_DIR that
# holds checkpoints of an earlier run stops and names them; True deletes them first and starts afresh.
_C.TRAIN.OVERWRITE_CHECKPOINTS = False
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# "pytorch" (our own / PySlowFast .pyth), "caffe2" (Detectron .pkl), or
# video_gc's explicit formats: "auto", "torchvision", "pyslowfast", "pytorchvideo", "video_gc".
_C.TRAIN.CHECKPOINT_TYPE = "pytorch"
_C.TRAIN.CHECKPOINT_INFLATE = False
# A native checkpoint of the same model in CHECKPOINT_FILE_PATH resumes its epoch and optimizer
# (PySlowFast); True takes its weights only and starts at epoch 0.
_C.TRAIN.CHECKPOINT_EPOCH_RESET = False
# video_gc: write OUTPUT_DIR/checkpoints/checkpoint_latest.pyth (exact mid-epoch resume) every this many
# minutes of training, and/or every CHECKPOINT_PERIOD_ITERS iterations; 0 turns each off.
_C.TRAIN.CHECKPOINT_PERIOD_MINUTES = 30.0
_C.TRAIN.CHECKPOINT_PERIOD_ITERS = 0
# video_gc: keep only the newest N epoch checkpoints (0 keeps all, as PySlowFast does).
_C.TRAIN.CHECKPOINT_KEEP_LAST = 0
# video_gc: also keep checkpoint_best.pyth, the epoch with the best validation top-1.
_C.TRAIN.CHECKPOINT_KEEP_BEST = True
_C.TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN = ()
_C.TRAIN.CHECKPOINT_IN_INIT = False
# video_gc: how a 2D kernel becomes 3D ("average" or "center").
_C.TRAIN.CHECKPOINT_INFLATE_MODE = "average"
# video_gc: fail when any model key is left unloaded (beyond the new head).
_C.TRAIN.CHECKPOINT_STRICT = False
# PySlowFast's switch; video_gc reads it as "use autocast".
_C.TRAIN.MIXED_PRECISION = False
# video_gc: autocast dtype, "fp16" (with a grad scaler, CUDA only) or "bf16".
_C.TRAIN.MIXED_PRECISION_DTYPE = "bf16"
# video_gc: freeze the stem and every stage up to this one for fine-tuning (video_gc.engine.freeze):
# none | stem | res2 | res3 | res4 | res5.
_C.TRAIN.FREEZE_UP_TO = "none"

# ---------------------------------------------------------------------------
# Testing
# ---------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.ENABLE = True
# Compatibility only (video_gc.config.compat): see TRAIN.DATASET.
_C.TEST.DATASET = "kinetics"
_C.TEST.BATCH_SIZE = 8
_C.TEST.CHECKPOINT_FILE_PATH = ""
_C.TEST.NUM_ENSEMBLE_VIEWS = 10
_C.TEST.NUM_SPATIAL_CROPS = 3
_C.TEST.CHECKPOINT_TYPE = "pytorch"
_C.TEST.SAVE_RESULTS_PATH = ""
# video_gc: the least fraction of the test list's videos that must be evaluated (not failed to
# decode). Below it the metrics are still written, marked "coverage_ok": false, and the run exits 1.
_C.TEST.MIN_COVERAGE = 0.95
# video_gc: forward-pass mode of the test loop (video_gc.inference.modes): reference |
# fused | channels_last | fp32 | bf16 | fp16 | compile | best. fp32 is exact (BN folded, fused,
# in the device's faster layout).
_C.TEST.INFERENCE_MODE = "fp32"

# ---------------------------------------------------------------------------
# ResNet backbone
# ---------------------------------------------------------------------------
_C.RESNET = CfgNode()
_C.RESNET.TRANS_FUNC = "bottleneck_transform"
_C.RESNET.NUM_GROUPS = 1
_C.RESNET.WIDTH_PER_GROUP = 64
_C.RESNET.INPLACE_RELU = True
_C.RESNET.STRIDE_1X1 = False
_C.RESNET.ZERO_INIT_FINAL_BN = True
_C.RESNET.DEPTH = 50
# Per stage (and pathway), how many leading blocks use the arch's temporal kernel.
_C.RESNET.NUM_BLOCK_TEMP_KERNEL = [[3], [4], [6], [3]]
_C.RESNET.SPATIAL_STRIDES = [[1], [2], [2], [2]]
_C.RESNET.SPATIAL_DILATIONS = [[1], [1], [1], [1]]

# ---------------------------------------------------------------------------
# Non-local (Wang et al. 2018), PySlowFast layout: per stage, per pathway,
# 0-based block indices.
# ---------------------------------------------------------------------------
_C.NONLOCAL = CfgNode()
_C.NONLOCAL.LOCATION = [[[]], [[]], [[]], [[]]]
_C.NONLOCAL.GROUP = [[1], [1], [1], [1]]
# gaussian | embedded_gaussian (alias: softmax) | dot_product | concatenation
_C.NONLOCAL.INSTANTIATION = "dot_product"
_C.NONLOCAL.POOL = [
    [[1, 2, 2], [1, 2, 2]],
    [[1, 2, 2], [1, 2, 2]],
    [[1, 2, 2], [1, 2, 2]],
    [[1, 2, 2], [1, 2, 2]],
]

# ---------------------------------------------------------------------------
# video_gc: lightweight global-context blocks inside the bottleneck.
# ---------------------------------------------------------------------------
_C.CONTEXT = CfgNode()
# none | gc | snl | se | avg_add | att_mul | custom (GCNet framework presets),
# cgd (Compact Global Descriptor), na (Normalization-Attention).
_C.CONTEXT.TYPE = "none"
# Per stage res2..res5, the 0-based indices of the blocks that get one.
_C.CONTEXT.LOCATION = [[], [], [], []]
# GCNet framework / NA: after1x1 | afterAdd. CGD: after_conv1 | after_conv2.
# "default" picks after1x1 for the GCNet family and NA, after_conv1 for CGD.
_C.CONTEXT.POSITION = "default"

# GCNet three-step framework (Cao et al., Eq. 4). Used when TYPE is "custom";
# the presets fill these in themselves.
_C.CONTEXT.GC = CfgNode()
_C.CONTEXT.GC.RATIO = 0.25
# Context modeling: att (softmax attention pooling over T*H*W) | avg.
_C.CONTEXT.GC.POOLING = "att"
# Transform: conv (C x C, SNL) | bottleneck (C -> C*ratio -> C).
_C.CONTEXT.GC.TRANSFORM = "bottleneck"
_C.CONTEXT.GC.LAYER_NORM = True
# Fusion: [add] | [mul] (x * sigmoid(transform)) | [mul, add] (each its own transform, mul
# first, as GCNet's released code allows). A bare name (FUSION: add) is read as a list of one.
_C.CONTEXT.GC.FUSION = ["add"]
# Which fusion branches start with their last conv zeroed (presets too): add (an add block
# starts as the identity) | all (GCNet's released code: a mul branch starts at x * 0.5) | none.
_C.CONTEXT.GC.ZERO_INIT = "add"

# Compact Global Descriptor (He et al.).
_C.CONTEXT.CGD = CfgNode()
_C.CONTEXT.CGD.VARIANT = "v10"
# Eq. 12: one weight vector shared by all frames. False: per-frame weights.
_C.CONTEXT.CGD.SHARE_TEMPORAL = True
# True starts every CGD as the identity (remark after Eq. 11); False follows the
# official code (Xavier-uniform weights, zero biases).
_C.CONTEXT.CGD.ZERO_INIT = False
# Multiplier on SOLVER.WEIGHT_DECAY for CGD parameters (the paper halves it).
_C.CONTEXT.CGD.WEIGHT_DECAY_MULT = 0.5
# The official code's switches: tanh on every descriptor, and a bias per descriptor.
_C.CONTEXT.CGD.NONLINEAR = True
_C.CONTEXT.CGD.BIAS = True

# Normalization-Attention (Ma et al.).
_C.CONTEXT.NA = CfgNode()
_C.CONTEXT.NA.EPS = 1e-5
# official: sigma = unbiased std_C(g) + eps, as the official code (its weights and results);
# paper: Eq. 7 as printed, sigma = sqrt(var_C(g) + eps) with the 1/C variance.
_C.CONTEXT.NA.STD_FORM = "official"

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
_C.MODEL = CfgNode()
# slow | c2d | c2d_nopool | c2d_nl32 (Non-local paper's 32-frame C2D) | i3d;
# slowonly = slow (older PySlowFast name)
_C.MODEL.ARCH = "slow"
_C.MODEL.MODEL_NAME = "ResNet"
_C.MODEL.NUM_CLASSES = 400
# cross_entropy (hard labels) | soft_cross_entropy (targets smoothed by MIXUP.LABEL_SMOOTH_VALUE, mixed
# when MIXUP.ENABLE; video_gc.engine.losses).
_C.MODEL.LOSS_FUNC = "cross_entropy"
# Compatibility only (video_gc.config.compat): PySlowFast's pathway tables; video_gc builds one pathway.
_C.MODEL.SINGLE_PATHWAY_ARCH = ["2d", "c2d", "i3d", "slow", "x3d", "mvit", "maskmvit"]
_C.MODEL.MULTI_PATHWAY_ARCH = ["slowfast"]
_C.MODEL.DROPOUT_RATE = 0.5
_C.MODEL.DROPCONNECT_RATE = 0.0
_C.MODEL.FC_INIT_STD = 0.01
_C.MODEL.HEAD_ACT = "softmax"

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""
_C.DATA.PATH_LABEL_SEPARATOR = " "
_C.DATA.PATH_PREFIX = ""
_C.DATA.NUM_FRAMES = 8
_C.DATA.SAMPLING_RATE = 8
# Compatibility only (video_gc.config.compat): PCA lighting jitter and preloaded image lists belong to
# PySlowFast's ImageNet / AVA loaders.
_C.DATA.TRAIN_PCA_EIGVAL = [0.225, 0.224, 0.229]
_C.DATA.TRAIN_PCA_EIGVEC = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
]
_C.DATA.PATH_TO_PRELOAD_IMDB = ""
_C.DATA.MEAN = [0.45, 0.45, 0.45]
_C.DATA.INPUT_CHANNEL_NUM = [3]
_C.DATA.STD = [0.225, 0.225, 0.225]
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
# Relative-area random crop (CGD recipe): area range and aspect-ratio range.
_C.DATA.TRAIN_JITTER_SCALES_RELATIVE = []
_C.DATA.TRAIN_JITTER_ASPECT_RELATIVE = []
# Read by video_gc.data.sampling: True spreads the test clips from the first frame to the last
# (video_gc's default); False is PySlowFast's default placement, start_i = delta * i / num_clips.
_C.DATA.USE_OFFSET_SAMPLING = True
# Compatibility only (video_gc.config.compat): the moving-crop augmentation is not implemented.
_C.DATA.TRAIN_JITTER_MOTION_SHIFT = False
_C.DATA.TRAIN_CROP_SIZE = 224
_C.DATA.TEST_CROP_SIZE = 256
_C.DATA.TARGET_FPS = 30
# Read by the train dataset: each train clip's TARGET_FPS is raised by uniform [0, this) (PySlowFast).
_C.DATA.TRAIN_JITTER_FPS = 0.0
# pyav | decord. PyAV, which skips the unneeded non-reference frames, costs 0.59-0.67x decord's CPU
# per training clip on downloaded videos (docs/data_pipeline.md#decoding).
_C.DATA.DECODING_BACKEND = "pyav"
# video_gc: what the lists point at: "video" files (decoded by DECODING_BACKEND) or "frames", the
# JPEG frame-store files of data_prep/make_frame_store.py (several times less CPU per clip, 6-12x the disk).
_C.DATA.FORMAT = "video"
# video_gc: where train clips are normalised. "auto": on the GPU when training on CUDA (batches cross
# over as uint8, a quarter of the bytes, and the loader workers skip the float pass), in the loader
# workers otherwise; "always" / "never" force one place (same numbers either way).
_C.DATA.NORMALIZE_ON_DEVICE = "auto"
# Read by the dataset: > 0 resizes decoded frames (up or down) to this short side before the
# train jitter / test resize; <= 0 is off. Off by default: PySlowFast's default is 256, but its
# Kinetics loader never reads the key, so off is what PySlowFast does.
_C.DATA.DECODING_SHORT_SIZE = 0
# Read by the train dataset: draw the jitter short side as 1 / uniform(1 / max, 1 / min).
_C.DATA.INV_UNIFORM_SAMPLE = False
_C.DATA.RANDOM_FLIP = True
_C.DATA.MULTI_LABEL = False
# sum | max over the softmax scores of a video's views.
_C.DATA.ENSEMBLE_METHOD = "sum"
_C.DATA.REVERSE_INPUT_CHANNEL = False
# video_gc: class-name file written by data_prep (relative to PATH_TO_DATA_DIR).
_C.DATA.CLASS_NAMES_FILE = "classids.json"

# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------
_C.AUG = CfgNode()
# Repeated augmentation: each train video gives this many clips, each with its own position and
# augmentation, decoded in one pass; a batch of TRAIN.BATCH_SIZE videos carries BATCH_SIZE x NUM_SAMPLE clips.
_C.AUG.NUM_SAMPLE = 1

# ---------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------
_C.SOLVER = CfgNode()
_C.SOLVER.BASE_LR = 0.1
# cosine | steps_with_relative_lrs | constant
_C.SOLVER.LR_POLICY = "cosine"
_C.SOLVER.COSINE_END_LR = 0.0
_C.SOLVER.COSINE_AFTER_WARMUP = False
# Compatibility only (video_gc.config.compat): PySlowFast's own schedules ignore GAMMA, STEP_SIZE and
# WARMUP_FACTOR too (no exp/step policy; the warm-up starts at WARMUP_START_LR).
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEP_SIZE = 1
_C.SOLVER.STEPS = []
_C.SOLVER.LRS = []
_C.SOLVER.MAX_EPOCH = 300
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.DAMPENING = 0.0
_C.SOLVER.NESTEROV = True
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Compatibility only (video_gc.config.compat): see SOLVER.GAMMA.
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_EPOCHS = 0.0
_C.SOLVER.WARMUP_START_LR = 0.01
# sgd | adam | adamw (decoupled weight decay).
_C.SOLVER.OPTIMIZING_METHOD = "sgd"
# Adam / AdamW coefficients of the running averages of the gradient and its square.
_C.SOLVER.BETAS = (0.9, 0.999)
# video_gc: the head's learning rate is this times the schedule's (fine-tuning a new head).
_C.SOLVER.HEAD_LR_MULT = 1.0
_C.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False
_C.SOLVER.ZERO_WD_1D_PARAM = False
# Gradient clipping: by value and/or by global L2 norm (None disables).
_C.SOLVER.CLIP_GRAD_VAL = None
_C.SOLVER.CLIP_GRAD_L2NORM = None

# ---------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------
_C.BN = CfgNode()
_C.BN.USE_PRECISE_STATS = False
_C.BN.NUM_BATCHES_PRECISE = 200
_C.BN.WEIGHT_DECAY = 0.0
_C.BN.MOMENTUM = 0.1
# batchnorm | sync_batchnorm
_C.BN.NORM_TYPE = "batchnorm"
_C.BN.NUM_SPLITS = 1
# Compatibility only (video_gc.config.compat): sync_batchnorm synchronises over all processes.
_C.BN.NUM_SYNC_DEVICES = 1
# Freeze BatchNorm while training: running statistics (eval mode) and, with FREEZE_AFFINE (video_gc),
# scale and shift. video_gc: FREEZE_PARTIAL leaves the first BN layer (the stem's) training (partial BN).
_C.BN.FREEZE = False
_C.BN.FREEZE_AFFINE = True
_C.BN.FREEZE_PARTIAL = False

# ---------------------------------------------------------------------------
# Mixup / CutMix of training batches, with soft targets (video_gc.engine.mixup)
# ---------------------------------------------------------------------------
_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = False
# Beta(ALPHA, ALPHA) mixup weight; Beta(CUTMIX_ALPHA, CUTMIX_ALPHA) cutmix area; 0 turns either off.
_C.MIXUP.ALPHA = 0.8
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability that a batch is mixed, and that it gets cutmix rather than mixup when both are on.
_C.MIXUP.PROB = 1.0
_C.MIXUP.SWITCH_PROB = 0.5
# Label smoothing of the soft targets (read with MODEL.LOSS_FUNC soft_cross_entropy, mixup or not).
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

# ---------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8
_C.DATA_LOADER.PIN_MEMORY = True
# video_gc: keep the worker processes between epochs (with NUM_WORKERS > 0); the dataset's epoch is
# shared with them, so each epoch still gets its own augmentation.
_C.DATA_LOADER.PERSISTENT_WORKERS = True
# video_gc: batches each worker loads ahead (with NUM_WORKERS > 0).
_C.DATA_LOADER.PREFETCH_FACTOR = 2
# Compatibility only (video_gc.config.compat): one decoding thread per loader worker.
_C.DATA_LOADER.ENABLE_MULTI_THREAD_DECODE = False

# ---------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------
_C.TENSORBOARD = CfgNode()
_C.TENSORBOARD.ENABLE = False
_C.TENSORBOARD.LOG_DIR = ""

# ---------------------------------------------------------------------------
# Misc (PySlowFast top-level keys)
# ---------------------------------------------------------------------------
_C.NUM_GPUS = 1
# video_gc: processes per machine when the run is on the CPU (NUM_GPUS 0, or no CUDA device visible);
# above 1, that many gloo processes are spawned. Under torchrun, torchrun sets the count.
_C.NUM_CPU_PROCESSES = 1
_C.NUM_SHARDS = 1
_C.SHARD_ID = 0
_C.OUTPUT_DIR = "./output"
_C.RNG_SEED = 1
_C.LOG_PERIOD = 10
# Compatibility only (video_gc.config.compat): the one-line model summary is always logged.
_C.LOG_MODEL_INFO = True
_C.DIST_BACKEND = "nccl"
_C.INIT_METHOD = "tcp://localhost:9999"


def get_defaults() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
