"""One table of every lip-sync model: architecture classes and named sizes.

``ARCHITECTURES`` maps an architecture key (stored in checkpoints) to its model and config
classes; ``MODELS`` maps user-facing names to an architecture plus a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import ModelConfig
from .marlin_generator import MarlinLipConfig, MarlinLipGenerator
from .marlin_syncnet import MarlinSyncConfig, MarlinSyncNet
from .opening_reader import OpeningReader, OpeningReaderConfig
from .quality_disc import QualityDisc, QualityDiscConfig
from .syncnet import SyncNetColor, SyncNetColorConfig
from .syncnet_v2 import SyncNetV2, SyncNetV2Config
from .wav2lip import Wav2Lip, Wav2LipConfig

__all__ = ["ARCHITECTURES", "MODELS", "ModelSpec", "available_models", "create_model", "model_from_config",
           "architecture_of", "GENERATORS"]

#: architecture key -> (model class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type[ModelConfig]]] = {
    "wav2lip": (Wav2Lip, Wav2LipConfig),
    "syncnet_color": (SyncNetColor, SyncNetColorConfig),
    "quality_disc": (QualityDisc, QualityDiscConfig),
    "syncnet_v2": (SyncNetV2, SyncNetV2Config),
    "marlin_lip": (MarlinLipGenerator, MarlinLipConfig),
    "marlin_sync": (MarlinSyncNet, MarlinSyncConfig),
    "opening_reader": (OpeningReader, OpeningReaderConfig),
}

#: architecture keys of the generators (common forward: ``generator(faces, mels)``)
GENERATORS = ("wav2lip", "marlin_lip")


@dataclass(frozen=True)
class ModelSpec:
    """A named size: which architecture and which config."""

    architecture: str
    config: ModelConfig
    description: str


_TINY_DECODER = dict(decoder_channels=(64, 48, 32, 24, 16, 16), n_res=1, audio_width=0.25, output_channels=16,
                     audio_skip=16, reference_mask=(0.25, 0.45, 0.75, 0.85))
# the mouth and the skin around it in a 96 px face crop, for the lips' discriminator
_LIPS_BOX = (0.25, 0.4, 0.75, 0.9)
_BASELINE = dict(encoder_init="random", freeze_encoder=False)

MODELS: dict[str, ModelSpec] = {
    "wav2lip": ModelSpec("wav2lip", Wav2LipConfig(), "Wav2Lip generator, release layout, 96 px"),
    "syncnet_color": ModelSpec("syncnet_color", SyncNetColorConfig(), "Wav2Lip expert SyncNet, 5 frames"),
    "quality_disc": ModelSpec("quality_disc", QualityDiscConfig(), "Wav2Lip visual quality discriminator"),
    "syncnet_color_tiny": ModelSpec("syncnet_color", SyncNetColorConfig(width=0.25),
                                    "expert SyncNet at a quarter of the width (1 M parameters), "
                                    "trains on a CPU"),
    "quality_disc_tiny": ModelSpec("quality_disc", QualityDiscConfig(width=0.25),
                                   "quality discriminator at a quarter of the width, trains on a CPU"),
    "quality_disc_lips_tiny": ModelSpec("quality_disc", QualityDiscConfig(width=0.25, slope=0.2,
                                                                          region=_LIPS_BOX),
                                        "quarter-width quality discriminator judging the mouth at "
                                        "twice the resolution, LeakyReLU 0.2, trains on a CPU"),
    "syncnet_v2": ModelSpec("syncnet_v2", SyncNetV2Config(), "SyncNet v2 for LSE-D / LSE-C (evaluation)"),
    "marlin_lip_tiny": ModelSpec("marlin_lip", MarlinLipConfig(marlin="vit_tiny", **_TINY_DECODER),
                                 "MARLIN-conditioned generator, vit_tiny encoder, trains on a CPU"),
    "marlin_lip_base": ModelSpec("marlin_lip", MarlinLipConfig(marlin="vit_base"),
                                 "MARLIN-conditioned generator, ViT-B encoder (paper scale)"),
    "vit_lip_tiny": ModelSpec("marlin_lip", MarlinLipConfig(marlin="vit_tiny", **_TINY_DECODER, **_BASELINE),
                              "'Wav2Lip + ViT' baseline: random-init trainable vit_tiny"),
    "vit_lip_base": ModelSpec("marlin_lip", MarlinLipConfig(marlin="vit_base", **_BASELINE),
                              "'Wav2Lip + ViT' baseline: random-init trainable ViT-B"),
    "marlin_sync_tiny": ModelSpec("marlin_sync",
                                  MarlinSyncConfig(marlin="vit_tiny", embed_dim=256, audio_width=0.25),
                                  "16-frame MARLIN sync expert, vit_tiny"),
    "marlin_sync_base": ModelSpec("marlin_sync", MarlinSyncConfig(marlin="vit_base"),
                                  "16-frame MARLIN sync expert, ViT-B (paper scale)"),
    "opening_reader": ModelSpec("opening_reader", OpeningReaderConfig(),
                                "mouth-opening reader for 96 px faces (a training loss: lipsync.train "
                                "--reader)"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(MODELS)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Randomly initialised model of a registry size; ``overrides`` replace config fields,
    e.g. ``create_model("marlin_lip_base", img_size=256)``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or an invalid override.
    """
    if name not in MODELS:
        raise ValueError(f"unknown lip-sync model {name!r}; choose from {available_models()}")
    spec = MODELS[name]
    config = spec.config.replace(**overrides) if overrides else spec.config
    return ARCHITECTURES[spec.architecture][0](config)


def model_from_config(architecture: str, config: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build an architecture from its config object or its ``to_dict()`` form."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {list(ARCHITECTURES)}")
    model_cls, config_cls = ARCHITECTURES[architecture]
    if isinstance(config, dict):
        config = config_cls.from_dict(config)
    if not isinstance(config, config_cls):
        raise TypeError(f"{architecture} needs a {config_cls.__name__}, got {type(config).__name__}")
    return model_cls(config)


def architecture_of(model: nn.Module) -> str:
    """The architecture key of a model instance."""
    for key, (model_cls, _) in ARCHITECTURES.items():
        if type(model) is model_cls:
            return key
    raise ValueError(f"{type(model).__name__} is not a lip-sync model architecture; "
                     f"known: {list(ARCHITECTURES)}")
