"""Model-agnostic training utilities shared by ``marlin.pretrain`` and the lip-sync trainers.

One code path runs on a CPU, one GPU or many (Hugging Face Accelerate over torch.distributed,
launched with ``accelerate launch`` or ``torchrun``).  The pieces:

- :func:`make_accelerator`: bf16 autocast on a GPU, fp32 on a CPU.
- :func:`atomic_write` / :func:`save_training_state` / :func:`load_training_state`: checkpoints
  written to a temporary file in the target folder, fsynced, then renamed over the old one, so
  a kill during a save never corrupts the latest checkpoint.  The state holds model(s),
  optimiser(s), scheduler(s), the step, user extras and the RNG states of every process
  (python, numpy, torch, cuda), so a resumed run repeats the uninterrupted one exactly.
- :class:`ResumableBatchSampler`: a deterministic, infinite, rank-sharded stream of
  ``(item, sample_seed)`` keys that restarts at any step; datasets draw their per-sample
  randomness from ``sample_seed`` so batches never depend on worker processes.
- :func:`lr_factor` / :func:`warmup_cosine`: linear warmup then cosine decay to a minimum lr.
- :func:`check_finite`: a non-finite loss stops every process with :class:`NonFiniteLossError`.
- :class:`MetricLogger`: CSV + TensorBoard; :func:`progress`: a tqdm bar on the main process;
  :func:`add_run_args` / :func:`run_cli`: the command-line options and error handling every
  trainer shares.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

__all__ = [
    "TrainingError", "NonFiniteLossError", "make_accelerator", "seed_everything", "rng_state",
    "set_rng_state", "atomic_write", "atomic_torch_save", "save_training_state",
    "load_training_state", "lr_factor", "warmup_cosine", "check_finite", "ResumableBatchSampler",
    "make_loader", "sync_gradients", "broadcast_module", "step_generator", "MetricLogger",
    "add_run_args", "progress", "run_cli",
]

STATE_VERSION = 1


class TrainingError(ValueError):
    """Bad training settings or an unusable checkpoint; the message names the value and reason."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped before the bad update was applied."""


# --------------------------------------------------------------------------- accelerator / RNG
def make_accelerator(*, cpu: bool = False, mixed_precision: str = "auto"):
    """Build an ``accelerate.Accelerator`` for this process.

    Parameters
    ----------
    cpu : force the CPU even when a GPU is visible.
    mixed_precision : "auto" (bf16 on a bf16-capable GPU, fp32 otherwise), "no", "bf16" (also on a
        CPU: autocast with bf16 matmuls and convolutions, about 2x faster on CPUs with AVX512-BF16 or
        AMX) or "fp16" (GPU only).
    """
    from accelerate import Accelerator

    choices = ("auto", "no", "bf16", "fp16")
    if mixed_precision not in choices:
        raise TrainingError(f"mixed_precision {mixed_precision!r} is not one of {choices}")
    on_gpu = torch.cuda.is_available() and not cpu
    if mixed_precision == "auto":
        mixed_precision = "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "no"
    elif mixed_precision == "fp16" and not on_gpu:
        warnings.warn(f"mixed_precision={mixed_precision!r} needs a GPU; training in fp32", stacklevel=2)
        mixed_precision = "no"
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state  # one per process; it refuses a second, different setting
    if state and state.get("_mixed_precision") != mixed_precision:
        # Training twice in one process (a notebook, the tests) with another precision: start the
        # accelerator state afresh; the distributed PartialState (process group, device) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


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


# --------------------------------------------------------------------------- schedule
def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup, then cosine to ``min_ratio``.

    Warmup: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (never exactly 0).
    Then ``min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * p))`` with
    ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1].
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


class _WarmupCosine:
    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                         min_ratio=self.min_ratio)


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                  min_lr: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`, ending at ``min_lr`` for every param group.

    Step it once per optimiser step (it is not prepared by Accelerate, which would step it once
    per process).
    """
    if total_steps < 1 or warmup_steps < 0:
        raise TrainingError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
    lambdas = [_WarmupCosine(warmup_steps, total_steps, min(1.0, min_lr / g["lr"]) if g["lr"] > 0 else 0.0)
               for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


# --------------------------------------------------------------------------- checks / DDP helpers
def check_finite(losses: Mapping[str, torch.Tensor | float], step: int, accelerator=None,
                 checkpoint: str | Path | None = None) -> None:
    """Raise :class:`NonFiniteLossError` on every process if any loss on any process is NaN/inf.

    Call it before ``backward`` so the bad update is never applied.
    """
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32).detach().reshape(()).cpu()
                          for v in losses.values()])
    bad = (~torch.isfinite(values)).any().float().reshape(1)
    if accelerator is not None and accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.to(accelerator.device), "sum").cpu()
    if bad.item() > 0:
        shown = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(losses, values.tolist()))
        kept = f"; last good checkpoint kept at {checkpoint}" if checkpoint else ""
        raise NonFiniteLossError(f"non-finite loss at step {step} ({shown}); training stopped{kept}. "
                                 "Try a lower learning rate or fp32 (--mixed-precision no).")


def sync_gradients(module: nn.Module, accelerator=None) -> None:
    """Average the gradients of a module that is not wrapped in DDP over all processes."""
    if accelerator is None or accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= accelerator.num_processes


def broadcast_module(module: nn.Module, accelerator=None) -> None:
    """Copy the main process's parameters and buffers to every process (for non-DDP modules)."""
    if accelerator is None or accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


# --------------------------------------------------------------------------- data order
class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite deterministic batches of ``(item_index, sample_seed)`` keys.

    The global sample number ``k = (step * world_size + rank) * batch_size + i`` fixes both the
    item (a per-epoch permutation seeded by ``(seed, epoch)``) and the sample seed, so the
    stream restarted at ``start_step`` continues exactly where an uninterrupted run would be,
    and the ranks see disjoint samples.
    """

    def __init__(self, n_items: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start_step: int = 0, shuffle: bool = True):
        if n_items < 1 or batch_size < 1:
            raise TrainingError(f"need at least one item and batch_size >= 1, got {n_items}, {batch_size}")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size, self.start_step, self.shuffle = rank, world_size, start_step, shuffle
        self._perm: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            order = (np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
                     if self.shuffle else np.arange(self.n_items))
            self._perm = (epoch, order)
        return self._perm[1]

    def key(self, k: int) -> tuple[int, int]:
        """The ``(item_index, sample_seed)`` of global sample number ``k``."""
        epoch, pos = divmod(k, self.n_items)
        sample_seed = int(np.random.SeedSequence([self.seed, k]).generate_state(1)[0])
        return int(self._order(epoch)[pos]), sample_seed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            base = (step * self.world_size + self.rank) * self.batch_size
            yield [self.key(base + i) for i in range(self.batch_size)]
            step += 1


def make_loader(dataset: Dataset, batch_sampler: Sampler, *, num_workers: int = 0, seed: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose worker seeds come from its own generator, not the global RNG."""
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0)


# --------------------------------------------------------------------------- logging / CLI
class MetricLogger:
    """Scalars to ``<log_dir>/metrics.csv`` (columns step, time, name, value) and TensorBoard.

    Only the process with ``enabled=True`` (the main one) writes.  With ``resume_step`` the rows
    and TensorBoard events after that step, left by an interrupted run, are dropped.
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.log_dir, self.enabled = Path(log_dir), enabled
        self.csv_path = self.log_dir / "metrics.csv"
        self._writer = None
        self._file = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            kept = [r for r in rows if r and int(r[0]) <= resume_step]
            atomic_write(self.csv_path, lambda f: f.write(
                "".join(",".join(r) + "\n" for r in [["step", "time", "name", "value"], *kept]).encode()))
        elif resume_step is None and self.csv_path.exists():
            self.csv_path.unlink()
        new = not self.csv_path.exists()
        self._file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "time", "name", "value"])
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed; metrics go to metrics.csv only", stacklevel=2)
            else:
                purge = None if resume_step is None else resume_step + 1
                self._writer = SummaryWriter(str(self.log_dir / "tb"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, float | torch.Tensor]) -> None:
        """Record scalar ``metrics`` at ``step``."""
        if not self.enabled:
            return
        now = f"{time.time():.3f}"
        for name, value in metrics.items():
            value = float(value)
            self._csv.writerow([step, now, name, f"{value:.8g}"])
            if self._writer is not None:
                self._writer.add_scalar(name, value, step)
        self._file.flush()

    def image(self, tag: str, step: int, image: np.ndarray) -> None:
        """Record an (H, W, 3) uint8 RGB image in TensorBoard."""
        if self.enabled and self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress(total: int, initial: int = 0, *, enabled: bool = True, desc: str = "train"):
    """A tqdm progress bar over steps (silent when ``enabled`` is False, e.g. on other ranks)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def add_run_args(parser: argparse.ArgumentParser, *, steps: int = 1000, batch_size: int = 8,
                 save_every: int = 500, log_every: int = 10) -> None:
    """Add the options every trainer shares (output folder, steps, resume, device, logging)."""
    g = parser.add_argument_group("run")
    g.add_argument("--out", type=Path, required=True,
                   help="output folder: checkpoints, metrics.csv, tb/ (TensorBoard), samples/")
    g.add_argument("--steps", type=int, default=steps, help="optimiser steps in the whole run")
    g.add_argument("--batch-size", type=int, default=batch_size, help="clips per step on each process")
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order and masks")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                   help="continue from OUT/state.pt (model, optimisers, schedulers, step, RNG)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is visible")
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on a GPU, fp32 on a CPU; bf16 also works on a CPU (about 2x "
                        "faster where the CPU has AVX512-BF16/AMX); fp16 needs a GPU")
    g.add_argument("--log-every", type=int, default=log_every, help="steps between logged metrics")
    g.add_argument("--save-every", type=int, default=save_every, help="steps between checkpoints")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None,
            bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run a trainer's ``main``: bad input -> one ``error:`` line and exit code 2, NaN -> code 1."""
    try:
        return main(argv)
    except (TrainingError, FileNotFoundError, *bad_input) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
