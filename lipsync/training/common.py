"""Pieces the lip-sync trainers share: model building, config overrides, datasets, loss logging,
samples, BCE, CLI errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync.checkpoints import CheckpointError, load
from lipsync.models import MODELS, create_model
from marlin.data import DataError, split_clips
from marlin.training import TrainingError, atomic_write, run_cli

log = logging.getLogger(__name__)

__all__ = ["OneLineParser", "trainer_cli", "add_eval_args", "check_args", "parse_overrides", "build_model",
           "trainable", "set_lr", "train_val_datasets", "IntervalMeans", "due", "bce", "lower_half",
           "save_png", "image_rows", "write_sample_video", "run_meta"]

D = TypeVar("D")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error: ...`` line and exit code 2."""

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def trainer_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a lip-sync trainer's ``main`` from the shell: INFO logging; bad input (missing data,
    a wrong checkpoint, an invalid value) -> one ``error:`` line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(main, argv, bad_input=(DataError, ValueError))


def add_eval_args(p: argparse.ArgumentParser, *, val_samples: int) -> None:
    """``--val-fraction``, ``--val-samples`` and ``--eval-every`` (every lip-sync trainer)."""
    p.add_argument("--val-fraction", type=float, default=0.1, help="identity share for val (no val.txt)")
    p.add_argument("--val-samples", type=int, default=val_samples, help="fixed val samples per evaluation")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace, positive: Sequence[str],
               existing: Sequence[str]) -> None:
    """``p.error`` (one line, exit 2) unless every ``positive`` option is >= 1 and every given
    ``existing`` path exists (a repeatable option: each of its paths); names are ``Namespace``
    attributes (``eval_every`` -> ``--eval-every``)."""
    for name in positive:
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    for name in existing:
        value = getattr(a, name)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is not None and not path.exists():
                p.error(f"--{name.replace('_', '-')} {path}: no such file or folder")


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
            model = reconfigured(model, overrides, init)
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


def reconfigured(model: nn.Module, overrides: Mapping[str, Any], init: Path, widen: bool = True) -> nn.Module:
    """``model`` rebuilt with config ``overrides`` and its weights copied over.

    For fields that leave every weight's shape alone (e.g. ``reference_mask``, ``audio_skip`` is
    not one), fields that add modules the model lists in ``grown_prefixes`` (they start neutral,
    e.g. ``refine_channels``), and fields the model lists in ``widened_fields`` when they only add
    channels (the model's ``grown_state`` places the trained weights so that the result computes
    what they did, e.g. a wider ``decoder_channels``; not with ``widen=False``); anything else is a
    one-line TrainingError naming the weights that no longer fit.
    """
    import dataclasses

    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TrainingError(f"--set {dict(overrides)}: {type(model).__name__} from {init} "
                            "has no config to change")
    try:
        new = type(model)(dataclasses.replace(config, **overrides))
    except (TypeError, ValueError) as e:
        raise TrainingError(f"--set {dict(overrides)}: {e}") from e
    old, fresh = model.state_dict(), new.state_dict()
    grown = getattr(new, "grown_prefixes", ())  # modules that start neutral: new ones keep their init
    added = {k for k in fresh.keys() - old.keys() if k.startswith(grown)}
    misfit = sorted(k for k in fresh.keys() | old.keys() if k not in added and (
        k not in old or k not in fresh or old[k].shape != fresh[k].shape))
    fields = tuple(getattr(new, "widened_fields", ())) if widen else ()
    if set(fields) & overrides.keys() and all(k in old and k in fresh for k in misfit) and (
            not _shaping_fields(model, overrides, fields)):
        try:
            new.load_state_dict(new.grown_state(old))
        except ValueError as e:
            raise TrainingError(f"--set {dict(overrides)}: {e}") from e
        return new
    if misfit:
        shown = ", ".join(misfit[:4]) + (f" and {len(misfit) - 4} more" if len(misfit) > 4 else "")
        raise TrainingError(f"--set {dict(overrides)} changes the weights of {init} ({shown}); "
                            "only fields that keep every weight's shape"
                            + (f" or widen the layers ({', '.join(fields)})" if fields else "")
                            + " can change on trained weights")
    new.load_state_dict({**{k: fresh[k] for k in added}, **old})
    return new


def _shaping_fields(model: nn.Module, overrides: Mapping[str, Any], fields: Sequence[str]) -> list[str]:
    """The fields of ``overrides`` other than ``fields`` that change the shape of one of ``model``'s
    weights (a widening must come from ``fields`` alone: the model places the trained weights by
    its own layout, which the others change)."""
    import dataclasses

    old = {k: v.shape for k, v in model.state_dict().items()}
    out = []
    for key, value in overrides.items():
        if key in fields:
            continue
        other = type(model)(dataclasses.replace(model.config, **{key: value})).state_dict()
        if any(k in old and v.shape != old[k] for k, v in other.items()):
            out.append(key)
    return out


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that need gradients (a frozen MARLIN encoder's are left out)."""
    return [p for p in model.parameters() if p.requires_grad]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group learning rate ``lr``.

    A resumed optimiser state carries the earlier run's rate; trainers without a schedule call
    this after ``load_training_state`` so that ``--lr`` given to the resumed run applies.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_val_datasets(make: Callable[..., D], data: Path, val_fraction: float) -> tuple[D, D]:
    """The train and val datasets of ``data``: ``make(data, split="train", val_fraction=...)`` and
    ``make(data, val_ids)``; without val clips the training set doubles as val (with a warning)."""
    train_ds = make(data, split="train", val_fraction=val_fraction)
    val_ids = split_clips(data, "val", val_fraction)
    if not val_ids:
        log.warning("%s: no val clips; evaluating on training clips", data)
        return train_ds, train_ds
    return train_ds, make(data, val_ids)


class IntervalMeans:
    """Sums of per-step losses since the last log line, and the samples/s over that interval.

    ``extra`` is the ``extra`` dict of a resumed training state (its ``log_sums``/``log_count``
    continue the interval exactly); :meth:`state` gives those entries back for saving.
    """

    def __init__(self, device: torch.device, extra: Mapping[str, Any] | None = None):
        extra = extra or {}
        self.sums: dict[str, Tensor] = {k: torch.tensor(v, device=device)
                                        for k, v in extra.get("log_sums", {}).items()}
        self.count = int(extra.get("log_count", 0))
        self.start_clock()

    def start_clock(self) -> None:
        """Start timing the interval now (e.g. after the step-0 evaluation)."""
        self.tick, self.seen = time.perf_counter(), 0

    def add(self, values: Mapping[str, Tensor], n_samples: int) -> None:
        """Add one step's scalar tensors (summed detached, in fp32) and its sample count."""
        self.count += 1
        self.seen += n_samples
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()

    def state(self) -> dict[str, Any]:
        """``{"log_count": ..., "log_sums": {...}}`` for ``save_training_state(extra=...)``."""
        return {"log_count": self.count, "log_sums": {k: float(v) for k, v in self.sums.items()}}

    def flush(self, acc: Any, prefix: str = "") -> dict[str, float]:
        """Means over the interval (averaged over processes, keys ``prefix + name``) and
        ``samples_per_s``; starts a new interval."""
        metrics = {prefix + k: acc.reduce((v / self.count).reshape(1), "mean").item()
                   for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        now = time.perf_counter()
        metrics["samples_per_s"] = self.seen * acc.num_processes / max(now - self.tick, 1e-9)
        self.tick, self.seen = now, 0
        return metrics


def due(done: int, every: int, total: int) -> bool:
    """Whether a periodic action (log, eval, save) runs after step ``done`` of ``total``."""
    return done % every == 0 or done == total


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
