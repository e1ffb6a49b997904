"""Lip-sync networks.

Public-release-compatible: :class:`Wav2Lip` (generator), :class:`SyncNetColor` (expert sync
discriminator), :class:`QualityDisc` (visual quality discriminator), :class:`SyncNetV2`
(LSE-D / LSE-C evaluation).  MARLIN-based: :class:`MarlinLipGenerator`, :class:`MarlinSyncNet`.
Training aid: :class:`OpeningReader` (reads the mouth opening of a generated face).

Every model takes RGB in [0, 1]; ``model.weights_colour`` says which order its weights expect
(the release's are BGR) and the model converts at its boundary.  Shapes: docs/usage/models.md.
"""

from .blocks import swap_rb
from .config import ModelConfig
from .inference import prepare_for_inference
from .marlin_encoder import MarlinWeightsError
from .marlin_generator import MarlinLipConfig, MarlinLipGenerator, rest_frames
from .marlin_syncnet import MarlinSyncConfig, MarlinSyncNet
from .opening_reader import OpeningReader, OpeningReaderConfig
from .quality_disc import QualityDisc, QualityDiscConfig
from .registry import (
    ARCHITECTURES,
    GENERATORS,
    MODELS,
    architecture_of,
    available_models,
    create_model,
    model_from_config,
)
from .syncnet import SyncNetColor, SyncNetColorConfig, sync_loss
from .syncnet_v2 import SyncNetV2, SyncNetV2Config
from .wav2lip import Wav2Lip, Wav2LipConfig

__all__ = [
    "ARCHITECTURES", "GENERATORS", "MODELS", "MarlinLipConfig", "MarlinLipGenerator", "MarlinSyncConfig",
    "MarlinSyncNet", "MarlinWeightsError", "ModelConfig", "OpeningReader", "OpeningReaderConfig",
    "QualityDisc", "QualityDiscConfig", "SyncNetColor", "SyncNetColorConfig", "SyncNetV2",
    "SyncNetV2Config", "Wav2Lip", "Wav2LipConfig", "architecture_of", "available_models", "create_model",
    "model_from_config", "prepare_for_inference", "rest_frames", "swap_rb", "sync_loss",
]
