"""Pieces both lip-sync trainers share: model building, config overrides, samples, BCE, CLI errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync.checkpoints import CheckpointError, load
from lipsync.models import MODELS, create_model
from marlin.training import TrainingError, atomic_write

log = logging.getLogger(__name__)

__all__ = ["OneLineParser", "parse_overrides", "build_model", "trainable", "bce", "lower_half", "save_png",
           "image_rows", "write_sample_video", "run_meta"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error: ...`` line and exit code 2."""

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["img_size=48", "face_size=[24,48]"]`` -> a dict (JSON values, lists as tuples, else strings)."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise TrainingError(f"--set {item!r}: expected KEY=VALUE, e.g. img_size=48")
        out[key.strip()] = _value(text.strip())
    return out


def build_model(name: str, overrides: Mapping[str, Any], init: Path | None, kinds: Sequence[str],
                marlin_checkpoint: Path | None = None) -> nn.Module:
    """A registry model (``lipsync.models.MODELS``) with config overrides, or the model of ``init``.

    ``init`` is any checkpoint ``lipsync.checkpoints.load`` reads (our safetensors or the public
    release files); its architecture must be one of ``kinds``.  ``marlin_checkpoint`` loads
    MARLIN encoder weights into a MARLIN-based model.
    """
    if init is not None:
        try:
            model = load(init, kind=tuple(kinds)).model
        except CheckpointError as e:
            raise TrainingError(str(e)) from e
        if overrides:
            raise TrainingError(f"--set {dict(overrides)} cannot change the config of --init {init}")
    else:
        if name not in MODELS or MODELS[name].architecture not in kinds:
            valid = [k for k, spec in MODELS.items() if spec.architecture in kinds]
            raise TrainingError(f"--model {name!r} is not one of {valid}")
        try:
            model = create_model(name, **overrides)
        except (TypeError, ValueError) as e:
            raise TrainingError(f"--set {dict(overrides)}: {e}") from e
    if marlin_checkpoint is not None:
        if not hasattr(model, "load_marlin"):
            raise TrainingError(f"--marlin-checkpoint: {type(model).__name__} has no MARLIN encoder")
        try:
            model.load_marlin(marlin_checkpoint)
        except (ValueError, OSError) as e:
            raise TrainingError(f"--marlin-checkpoint {marlin_checkpoint}: {e}") from e
    elif init is None and getattr(getattr(model, "config", None), "encoder_init", None) == "marlin":
        warnings.warn(f"{name}: the MARLIN encoder is randomly initialised; pass --marlin-checkpoint "
                      "(e.g. from python -m marlin.pretrain) to use pretrained features", stacklevel=2)
    return model.train()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that need gradients (a frozen MARLIN encoder's are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def bce(prob: Tensor, target: float | Tensor) -> Tensor:
    """Binary cross-entropy of probabilities in fp32 (safe outside autocast): ``(N, ...) -> ()``."""
    prob = prob.float().clamp(1e-7, 1 - 1e-7)
    target = torch.as_tensor(target, dtype=prob.dtype, device=prob.device).expand_as(prob)
    return F.binary_cross_entropy(prob, target)


def lower_half(faces: Tensor, face_size: tuple[int, int]) -> Tensor:
    """``(B, 3, T, S, S)`` faces -> ``(B, 3, T, h, w)`` lower halves (whole face resized to ``(2h, w)``)."""
    b, c, t, s, _ = faces.shape
    h, w = face_size
    x = faces.transpose(1, 2).reshape(b * t, c, s, s)
    if (s, s) != (2 * h, w):
        x = F.interpolate(x, size=(2 * h, w), mode="bilinear", align_corners=False, antialias=s > w)
    return x[:, :, h:].reshape(b, t, c, h, w).transpose(1, 2)


def image_rows(rows: Sequence[Tensor], max_frames: int = 8) -> np.ndarray:
    """Rows of ``(3, T, H, W)`` images in [0, 1] -> one ``(R*H, k*W, 3)`` uint8 picture (k spaced frames)."""
    t = rows[0].shape[1]
    pick = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    lines = [torch.cat(list(r[:, pick].float().permute(1, 2, 3, 0)), dim=1) for r in rows]
    return (torch.cat(lines, dim=0).clamp(0, 1) * 255).round().byte().cpu().numpy()


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 picture atomically."""
    from PIL import Image

    atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))


def write_sample_video(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: int = 25) -> None:
    """(T, H, W, 3) uint8 frames (+ 16 kHz mono audio) -> H.264/AAC mp4, written atomically."""
    from lipsync.data.synthetic.clip import write_video

    h, w = frames.shape[1:3]
    frames = frames[:, : h - h % 2, : w - w % 2]  # H.264 wants even sizes
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.ascontiguousarray(frames), audio, fps)


def run_meta(data: Path, steps: int, **extra: Any) -> dict[str, Any]:
    """Metadata for ``lipsync.checkpoints.save`` of a trained model."""
    meta = {"trained_on": str(data), "steps": int(steps), "audio_convention": "inference", "fps": 25}
    meta.update({k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items() if v is not None})
    return meta
