"""The persistent state of a training run: RNG states, atomic files, resumable checkpoints.

Used through :mod:`marlin.training` (which re-exports everything here).  Checkpoints are written
to a temporary file in the target folder, fsynced, then renamed over the old one, so a kill
during a save never corrupts the latest checkpoint.  A state holds model(s), optimiser(s),
scheduler(s), the step, user extras and the RNG states of every process (python, numpy, torch,
cuda), so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "TrainingError", "NonFiniteLossError", "STATE_VERSION", "seed_everything", "rng_state", "set_rng_state",
    "step_generator", "atomic_write", "atomic_torch_save", "save_training_state", "load_training_state",
]

STATE_VERSION = 1

class TrainingError(ValueError):
    """Bad training settings or an unusable checkpoint; the message names the value and reason."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped before the bad update was applied."""



def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state is what we restore
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states made by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn("checkpoint was saved with a different GPU count; CUDA RNG not restored",
                          stacklevel=2)


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0,
                   device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` that depends only on (seed, step, rank, stream), e.g. for masks."""
    value = int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(1, np.uint64)[0]) >> 1
    return torch.Generator(device=device).manual_seed(value)


# --------------------------------------------------------------------------- atomic checkpoints
def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so readers see either the old or the complete new content, never a part.

    ``write(f)`` fills a temporary file in the same folder; it is flushed, fsynced and renamed
    over ``path`` with ``os.replace``.  On any exception the temporary file is removed and
    ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def _unwrap(module: nn.Module, accelerator=None) -> nn.Module:
    if accelerator is not None:
        return accelerator.unwrap_model(module)
    return getattr(module, "module", module)


def save_training_state(path: str | Path, *, models: Mapping[str, nn.Module],
                        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                        schedulers: Mapping[str, Any] | None = None, step: int,
                        extra: Mapping[str, Any] | None = None, accelerator=None) -> None:
    """Save a resumable training state atomically (call on every process; the main one writes).

    The RNG states of all processes are gathered, so each rank resumes with its own.
    ``extra`` must hold only tensors, numbers, strings and containers of them.
    """
    states = [rng_state()]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        states = gather_object(states)
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        state = {
            "version": STATE_VERSION,
            "step": int(step),
            "models": {k: _unwrap(m, accelerator).state_dict() for k, m in models.items()},
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()},
            "rng": states,
            "extra": dict(extra or {}),
        }
        atomic_torch_save(state, path)
    if accelerator is not None:
        accelerator.wait_for_everyone()


def load_training_state(path: str | Path, *, models: Mapping[str, nn.Module],
                        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                        schedulers: Mapping[str, Any] | None = None, accelerator=None,
                        restore_rng: bool = True) -> tuple[int, dict[str, Any]]:
    """Restore a state written by :func:`save_training_state`; returns ``(step, extra)``.

    Call it last before the training loop: it sets the RNG states.
    Raises :class:`TrainingError` when the file is unreadable or does not match the objects.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise TrainingError(f"{path}: no training state to resume from") from e
    except Exception as e:  # any unpickling failure means the file is unusable
        raise TrainingError(f"{path}: not a readable training state ({e})") from e
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainingError(f"{path}: not a training state of version {STATE_VERSION}")
    groups = (("models", models), ("optimizers", optimizers or {}), ("schedulers", schedulers or {}))
    for kind, objs in groups:
        saved = state[kind]
        if set(saved) != set(objs):
            raise TrainingError(f"{path}: holds {kind} {sorted(saved)}, this run has {sorted(objs)}")
        for key, obj in objs.items():
            target = _unwrap(obj, accelerator) if kind == "models" else obj
            try:
                target.load_state_dict(saved[key])
            except (RuntimeError, ValueError, KeyError) as e:
                raise TrainingError(f"{path}: {kind[:-1]} {key!r} does not match this run: {e}") from e
    if restore_rng:
        rank = accelerator.process_index if accelerator is not None else 0
        world = accelerator.num_processes if accelerator is not None else 1
        if len(state["rng"]) == world:
            set_rng_state(state["rng"][rank])
        else:
            warnings.warn(f"{path}: saved by {len(state['rng'])} processes, resumed by {world}; "
                          "RNG states re-seeded, the run will not repeat exactly", stacklevel=2)
            seed_everything(state["step"] * 1000 + rank)
    return state["step"], state["extra"]
