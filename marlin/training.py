"""Model-agnostic training utilities shared by ``marlin.pretrain`` and the lip-sync trainers.

One code path runs on a CPU, one GPU or many (Hugging Face Accelerate over torch.distributed,
launched with ``accelerate launch`` or ``torchrun``).  The pieces:

- :func:`make_accelerator`: bf16 autocast on a GPU, fp32 on a CPU unless bf16 is asked for.
- :func:`atomic_write` / :func:`save_training_state` / :func:`load_training_state` (from
  :mod:`marlin.train_state`): atomic, resumable checkpoints that repeat the uninterrupted run
  exactly.
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
import csv
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .train_state import (
    STATE_VERSION,
    NonFiniteLossError,
    TrainingError,
    atomic_torch_save,
    atomic_write,
    load_training_state,
    rng_state,
    save_training_state,
    seed_everything,
    set_rng_state,
    step_generator,
)

log = logging.getLogger(__name__)

__all__ = [
    "TrainingError", "NonFiniteLossError", "make_accelerator", "seed_everything", "rng_state",
    "set_rng_state", "atomic_write", "atomic_torch_save", "save_training_state",
    "load_training_state", "lr_factor", "warmup_cosine", "check_finite", "ResumableBatchSampler",
    "make_loader", "sync_gradients", "broadcast_module", "step_generator", "MetricLogger",
    "add_run_args", "progress", "run_cli", "STATE_VERSION",
]


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
