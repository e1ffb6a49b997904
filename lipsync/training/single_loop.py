"""The loop both single-model trainers share (the sync expert and the mouth-opening reader).

One model, one optimiser (and optionally a scheduler), one supervised loss per batch: resumable
data order, interval means of the logged values, evaluation, atomic saves of the training state
and of the weights (``lipsync.checkpoints`` format), progress bar.  The generator's loop, with its
discriminator, read-out head and sync switch, is separate (``generator_loop``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lipsync.checkpoints import save as save_weights
from marlin.training import (
    MetricLogger,
    ResumableBatchSampler,
    check_finite,
    load_training_state,
    make_loader,
    progress,
    save_training_state,
)

from .common import IntervalMeans, due, run_meta, set_lr

__all__ = ["SingleModelRun", "run_single_model"]


@dataclass
class SingleModelRun:
    """What :func:`run_single_model` needs besides the config.

    ``step(batch)`` returns the loss and the values to log (``train/...``, scalar tensors) with
    the batch's sample count; ``evaluate()`` the val metrics (``val/...``); ``meta`` extra
    checkpoint metadata.  ``name`` keys the model in ``state.pt`` and names the weights file
    ``OUT/<name>.safetensors``.
    """

    name: str
    model: torch.nn.Module  # as prepared by Accelerate
    core: torch.nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    train_ds: Any
    step: Callable[[Mapping[str, Any]], tuple[Tensor, dict[str, Tensor], int]]
    evaluate: Callable[[], dict[str, float]]
    scheduler: Any = None
    meta: Mapping[str, Any] | None = None
    desc: str = "train"  # progress bar label


def run_single_model(cfg: Any, acc: Any, run: SingleModelRun) -> dict[str, float]:
    """Train ``run.model`` for ``cfg.steps`` (``cfg``: a trainer config with ``out``, ``steps``,
    ``batch_size``, ``lr``, ``seed``, ``num_workers``, ``resume``, ``init``, ``model``, ``data``,
    ``eval_every``, ``save_every``, ``log_every``).  Returns the last evaluation metrics.

    A resumed run without a scheduler takes this run's ``cfg.lr`` (not the saved one).
    """
    state_path: Path = cfg.out / "state.pt"
    models, opts = {run.name: run.model}, {run.name: run.optimizer}
    scheds = {run.name: run.scheduler} if run.scheduler is not None else None
    start, extra = 0, {}
    if cfg.resume:
        start, extra = load_training_state(state_path, models=models, optimizers=opts, schedulers=scheds,
                                           accelerator=acc)
        if run.scheduler is None:
            set_lr(run.optimizer, cfg.lr)
    means = IntervalMeans(acc.device, extra)  # kept in checkpoints for exact resumes
    sampler = ResumableBatchSampler(len(run.train_ds), cfg.batch_size, seed=cfg.seed, rank=acc.process_index,
                                    world_size=acc.num_processes, start_step=start)
    batches = iter(make_loader(run.train_ds, sampler, num_workers=cfg.num_workers, seed=cfg.seed))
    logger = MetricLogger(cfg.out, enabled=acc.is_main_process, resume_step=start if cfg.resume else None)
    last: dict[str, float] = {}

    def evaluate(step: int) -> None:
        nonlocal last
        if acc.is_main_process:
            last = run.evaluate()
            logger.log(step, last)

    def save(step: int) -> None:
        save_training_state(state_path, models=models, optimizers=opts, schedulers=scheds, step=step,
                            extra=means.state(), accelerator=acc)
        if acc.is_main_process:
            scores = {"val_" + k.split("/")[1]: v for k, v in last.items()}
            meta = run_meta(cfg.data, step, model=cfg.model if cfg.init is None else None, init=cfg.init,
                            **dict(run.meta or {}), **scores)
            save_weights(cfg.out / f"{run.name}.safetensors", run.core, meta)
        acc.wait_for_everyone()

    if start == 0:
        evaluate(0)
    bar = progress(cfg.steps, start, enabled=acc.is_main_process, desc=run.desc)
    means.start_clock()
    try:
        for step in range(start, cfg.steps):
            loss, logged, n = run.step(next(batches))
            check_finite({"loss": loss}, step, acc, state_path if state_path.exists() else None)
            run.optimizer.zero_grad(set_to_none=True)
            acc.backward(loss)
            run.optimizer.step()
            if run.scheduler is not None:
                run.scheduler.step()
            done = step + 1
            bar.update(1)
            means.add({"train/loss": loss, **logged}, n)
            if due(done, cfg.log_every, cfg.steps):
                metrics = means.flush(acc)
                logger.log(done, metrics)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
            if due(done, cfg.eval_every, cfg.steps):
                evaluate(done)
            if due(done, cfg.save_every, cfg.steps):
                save(done)
    finally:
        bar.close()
        logger.close()
    return last
