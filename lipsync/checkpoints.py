"""Save and load lip-sync model weights; rebuild the right model from the file alone.

Accepted files (recognised by content, not suffix):

* this project's safetensors files, written by :func:`save`; their metadata holds the
  architecture, the config JSON, the weights' colour order, the mel window convention, what
  they were trained on and for how many steps;
* the public Wav2Lip release: ``wav2lip.pth``, ``wav2lip_gan.pth``, ``lipsync_expert.pth``,
  ``visual_quality_disc.pth`` -- a ``{"state_dict", "optimizer", "global_step", ...}`` dict or
  a bare state dict, with or without DataParallel's ``module.`` prefix -- recognised by their
  keys and marked as BGR weights;
* syncnet_python's ``syncnet_v2.model`` (a bare state dict).

Pickled files are read with ``torch.load(weights_only=True)``.  Every failure (missing, empty,
truncated or foreign file, the wrong kind of model, mismatched shapes) raises
:class:`CheckpointError` naming the path and the reason.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from marlin.checkpoint import strip_prefixes
from marlin.training import atomic_write

from .models.registry import ARCHITECTURES, architecture_of, model_from_config

__all__ = ["CheckpointError", "LoadedModel", "save", "load", "load_state_dict", "detect_release",
           "average", "FORMAT", "CONVENTIONS"]

#: Value of the ``format`` metadata entry of this project's files.
FORMAT = "marlin-lipsync/1"
#: Mel window conventions (see ``audio.windows``): the project trains and infers with "inference".
CONVENTIONS = ("inference", "wav2lip_train")
_PREFIXES = ("module.", "_orig_mod.")

#: Public files: architecture key, a key only that network has, the weights' mel convention.
_RELEASE = (
    ("wav2lip", "output_block.1.weight", "wav2lip_train"),
    ("quality_disc", "binary_pred.0.weight", None),
    ("syncnet_color", "face_encoder.0.conv_block.0.weight", "inference"),
    ("syncnet_v2", "netcnnlip.0.weight", None),
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is of the wrong kind, or does not fit its model."""


@dataclass
class LoadedModel:
    """What :func:`load` returns.

    Attributes
    ----------
    model : nn.Module
        The rebuilt model in eval mode, weights loaded, on ``map_location``.
    meta : dict
        ``format`` ("marlin-lipsync/1", "wav2lip-release" or "syncnet-release"),
        ``architecture``, ``config`` (dict), ``colour`` ("rgb"/"bgr", the weights' order),
        ``audio_convention`` (mel windows the weights were trained with, or None), ``trained_on``,
        ``steps`` (int or None), ``path``, plus any extra entries given to :func:`save`.
    """

    model: nn.Module
    meta: dict[str, Any] = field(default_factory=dict)


# ----- saving ---------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as safetensors with everything needed to rebuild it (atomic).

    Parameters
    ----------
    path:
        Target file (``.safetensors`` by convention); written to a temporary file beside it
        and renamed, so a crash never leaves a half-written checkpoint.
    model:
        A ``lipsync.models`` model (DataParallel/DDP/compiled wrappers are unwrapped).
    meta:
        Optional ``trained_on`` (str), ``steps`` (int), ``audio_convention`` ("inference",
        the default, or "wav2lip_train"), and any other JSON-serialisable entries.

    Raises
    ------
    CheckpointError
        For a model that is not a lip-sync architecture or an invalid ``meta``.
    """
    model = _unwrap(model)
    try:
        arch = architecture_of(model)
    except ValueError as e:
        raise CheckpointError(f"cannot save to {path}: {e}") from e
    extra = dict(meta or {})
    convention = extra.pop("audio_convention", "inference")
    if convention not in CONVENTIONS:
        raise CheckpointError(f"cannot save to {path}: audio_convention {convention!r} "
                              f"is not one of {CONVENTIONS}")
    steps = extra.pop("steps", None)
    trained_on = extra.pop("trained_on", "")
    try:
        extra_json = json.dumps(extra, sort_keys=True)
    except TypeError as e:
        raise CheckpointError(f"cannot save to {path}: meta is not JSON-serialisable ({e})") from e
    metadata = {
        "format": FORMAT, "architecture": arch, "config": model.config.to_json(),
        "colour": model.config.colour, "audio_convention": convention, "trained_on": str(trained_on),
        "steps": "" if steps is None else str(int(steps)), "extra": extra_json,
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(tensors, metadata=metadata)
    return atomic_write(path, lambda f: f.write(data))


# ----- reading --------------------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"checkpoint {path}: truncated or corrupt safetensors file ({e})") from e
    return tensors, metadata


def _read_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"checkpoint {path}: holds objects other than tensors and plain containers, "
                              f"refused by torch.load(weights_only=True) ({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: not a PyTorch or safetensors checkpoint, or truncated "
                              f"({first})") from e


def _strip(state: Mapping[str, Any]) -> dict[str, Any]:
    return strip_prefixes({str(key): value for key, value in state.items()}, _PREFIXES)


def detect_release(state: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``(architecture, mel convention)`` of a public state dict (prefixes stripped), or None."""
    for arch, marker, convention in _RELEASE:
        if marker in state:
            return arch, convention
    return None


def load_state_dict(model: nn.Module, state: Mapping[str, Tensor], where: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly, naming missing / unexpected / mismatched keys.

    ``model`` may live on the meta device (built without initialising its weights); the file's
    tensors are then assigned, cast to the model's floating dtype.  Missing
    ``num_batches_tracked`` counters (files from PyTorch < 0.4.1) are tolerated (set to 0).

    Raises
    ------
    CheckpointError
    """
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if not isinstance(state[k], Tensor) or tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
        if wrong:
            parts.append("mismatched shapes (" + ", ".join(
                f"{k}: file {tuple(getattr(state[k], 'shape', ()))} vs model {tuple(own[k].shape)}"
                for k in wrong[:3]) + (", ..." if len(wrong) > 3 else "") + ")")
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: " + "; ".join(parts))
    full = {}
    for key, target in own.items():
        value = state.get(key)
        if value is None:  # an old file without num_batches_tracked
            value = torch.zeros((), dtype=torch.long)
        elif value.is_floating_point() and target.is_floating_point():
            value = value.to(target.dtype)
        full[key] = value.contiguous()
    model.load_state_dict(full, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{where}: {type(model).__name__} has tensors not stored in the file: "
                              f"{left[:4]}")


def _build(arch: str, config: Any) -> nn.Module:
    """The model on the meta device: no time spent initialising weights about to be replaced."""
    with torch.device("meta"):
        return model_from_config(arch, config)


def _kind_check(path: Path, arch: str, kind: str | Iterable[str] | None) -> None:
    if kind is None:
        return
    wanted = (kind,) if isinstance(kind, str) else tuple(kind)
    if arch not in wanted:
        expected = " or ".join(map(repr, wanted))
        raise CheckpointError(f"checkpoint {path}: holds a {arch!r} model, expected {expected}")


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu",
         kind: str | Iterable[str] | None = None) -> LoadedModel:
    """Rebuild a model from a checkpoint file alone.

    Parameters
    ----------
    path:
        Our safetensors file, or a public ``.pth`` / ``syncnet_v2.model`` file.
    map_location:
        Device for the model.
    kind:
        Optional architecture key(s) the file must hold (e.g. ``("wav2lip", "marlin_lip")``
        for any generator); see ``lipsync.models.ARCHITECTURES``.

    Returns
    -------
    LoadedModel
        ``model`` in eval mode and ``meta`` (see :class:`LoadedModel`).

    Raises
    ------
    CheckpointError
        Missing, empty, truncated or foreign file; wrong kind; mismatched shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty file")
    if _is_safetensors(path):
        tensors, metadata = _read_safetensors(path)
        if metadata.get("format") == FORMAT:
            return _load_ours(path, tensors, metadata, map_location, kind)
        state = _strip(tensors)
        fmt, steps = "safetensors", None
    else:
        obj = _read_pickle(path)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"checkpoint {path}: holds a {type(obj).__name__}, not a state dict")
        steps = obj.get("global_step") if isinstance(obj.get("global_step"), int) else None
        inner = obj.get("state_dict", obj)
        if not isinstance(inner, Mapping):
            raise CheckpointError(f"checkpoint {path}: 'state_dict' is a {type(inner).__name__}, "
                                  "not a mapping")
        state, fmt = _strip(inner), None
    found = detect_release(state)
    if found is None:
        keys = sorted(state)[:4]
        if any(k.startswith(("encoder.patch_embedding", "marlin.")) for k in state):
            raise CheckpointError(f"checkpoint {path}: is a MARLIN checkpoint, not a lip-sync model; "
                                  "load it with marlin.Marlin.from_file")
        raise CheckpointError(f"checkpoint {path}: not a lip-sync model this loader knows "
                              f"(first keys {keys}); expected one of {list(ARCHITECTURES)}")
    arch, convention = found
    _kind_check(path, arch, kind)
    model = _build(arch, ARCHITECTURES[arch][1](colour="bgr"))
    load_state_dict(model, state, f"checkpoint {path}")
    meta = {
        "format": fmt or ("syncnet-release" if arch == "syncnet_v2" else "wav2lip-release"),
        "architecture": arch, "config": model.config.to_dict(), "colour": model.config.colour,
        "audio_convention": convention, "trained_on": "public release", "steps": steps, "path": str(path),
    }
    return LoadedModel(model.to(map_location).eval(), meta)


def _load_ours(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str],
               map_location: str | torch.device, kind: str | Iterable[str] | None) -> LoadedModel:
    arch = metadata.get("architecture", "")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"checkpoint {path}: unknown architecture {arch!r}; "
                              f"known: {list(ARCHITECTURES)}")
    _kind_check(path, arch, kind)
    try:
        config = json.loads(metadata["config"])
        model = _build(arch, config)
        extra = json.loads(metadata.get("extra") or "{}")
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: invalid stored config for {arch!r} ({e})") from e
    load_state_dict(model, tensors, f"checkpoint {path}")
    steps = metadata.get("steps", "")
    meta = {
        **extra, "format": FORMAT, "architecture": arch, "config": config, "colour": model.config.colour,
        "audio_convention": metadata.get("audio_convention", "inference"),
        "trained_on": metadata.get("trained_on", ""), "steps": int(steps) if steps.isdigit() else None,
        "path": str(path),
    }
    return LoadedModel(model.to(map_location).eval(), meta)


# ----- averaging ------------------------------------------------------------------------------
def average(paths: Iterable[str | os.PathLike], kind: str | Iterable[str] | None = None) -> LoadedModel:
    """Uniform average of several checkpoints of one model (weight averaging, as in SWA).

    With a constant learning rate and a GAN in the loss, single checkpoints of a run swing from
    one save to the next; their mean sits nearer the middle of the region they wander over.
    ``torch.optim.swa_utils`` averages online, during training; this averages files already
    written, so any run's saves can be combined afterwards.

    Parameters
    ----------
    paths:
        Two or more files :func:`load` accepts, all of the same architecture, config, colour
        order and mel window convention (normally saves of one run).
    kind:
        Optional architecture key(s) the files must hold, as for :func:`load`.

    Returns
    -------
    LoadedModel
        The averaged model. Floating tensors (weights and BatchNorm running statistics) are
        averaged in float64; integer buffers (BatchNorm batch counters) come from the last file.
        ``meta`` is the last file's, with ``averaged_from``: the files' names and steps.

    Raises
    ------
    CheckpointError
        Fewer than two files, an unreadable file, or files of different models.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    total: dict[str, Tensor] = {}  # running float64 sums: one model in memory at a time
    sources = []
    for k, p in enumerate(paths):
        item = load(p, kind=kind)
        if k == 0:
            first = item.meta
        for key in ("architecture", "config", "colour", "audio_convention"):
            if item.meta[key] != first[key]:
                raise CheckpointError(f"checkpoint {p}: its {key} differs from {paths[0]}'s; only "
                                      "checkpoints of one model can be averaged")
        for key, value in item.model.state_dict().items():
            if value.is_floating_point():
                total[key] = value.to(torch.float64) + total[key] if k else value.to(torch.float64)
        sources.append({"file": p.name, "steps": item.meta.get("steps")})
    last = item.model.state_dict()  # integer buffers (batch counters) stay the last file's
    last.update({key: (value / len(paths)).to(last[key].dtype) for key, value in total.items()})
    item.model.load_state_dict(last)
    item.meta["averaged_from"] = sources
    return item
