"""MARLIN: facial video masked autoencoder (model, masking, checkpoints, features).

``from marlin import Marlin`` needs only torch, einops and safetensors; the face and video
modules (``marlin.face``, ``marlin.video``) are imported only when a function needs them.
"""

from .checkpoint import CheckpointError, load_marlin, load_state_dict, save_marlin
from .config import MODEL_CONFIGS, MarlinConfig, available_models, get_config
from .features import VideoFeatures, extract_features, extract_video
from .masking import MASKING_STRATEGIES, REGION_NAMES, make_mask
from .model import Marlin, patchify, unpatchify

__all__ = [
    "CheckpointError",
    "MASKING_STRATEGIES",
    "MODEL_CONFIGS",
    "Marlin",
    "MarlinConfig",
    "REGION_NAMES",
    "VideoFeatures",
    "available_models",
    "extract_features",
    "extract_video",
    "get_config",
    "load_marlin",
    "load_state_dict",
    "make_mask",
    "patchify",
    "save_marlin",
    "unpatchify",
]
