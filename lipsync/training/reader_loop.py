"""Training loop of the mouth-opening reader (``OpeningReader``, ``python -m lipsync.train_reader``).

Recipe: single frames' lower halves against the opening their face-mesh landmarks measure
(:class:`lipsync.data.datasets.OpeningDataset`), MSE on 10x the opening, AdamW (weight decay
0.05) with warmup and cosine decay.  Each batch is augmented on the fly (:func:`augment`): a
random Gaussian blur on most samples, brightness, per-channel colour and offset changes, a small shift,
a horizontal flip and noise.  The reader is meant to judge *generated* mouths, which are
blurrier and differently coloured than any training frame.  On the synthetic set (128 training
identities) it overfits easily: a first version, 1.5x as wide, without dropout, flips or
per-channel colour changes and with weight decay 1e-4, reached a held-out correlation of 0.83
after 500 steps and fell to 0.72 by 1500; this recipe reaches 0.95 (0.94 on blurred frames).
Without the blur it reads sharp frames a little better (0.96) and blurred ones worse (0.87).

Evaluation every ``eval_every`` steps on fixed val frames: ``val/rmse`` (opening units),
``val/r`` (Pearson correlation) and ``val/r_blur`` (the same frames blurred, sigma 1.5 px).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lipsync.data.datasets import ClipSetUnion, OpeningDataset, collate_keys, fixed_keys
from lipsync.data.sync_measure import sync_correlation
from marlin.training import make_accelerator, seed_everything, warmup_cosine

from .common import build_model, train_val_datasets
from .single_loop import SingleModelRun, run_single_model

log = logging.getLogger(__name__)

__all__ = ["ReaderTrainConfig", "train_reader", "evaluate_reader", "augment", "gaussian_blur"]


@dataclass(frozen=True)
class ReaderTrainConfig:
    """Everything one reader training run needs (built by ``python -m lipsync.train_reader``)."""

    data: Path  # preprocessed data folder (with face-mesh landmarks)
    out: Path  # run folder
    # preprocessed folders of a generator's dubs (lipsync.infer --pairs, then lipsync.preprocess):
    # their landmarks measure the generated mouths; read together with ``data``, each split by its own
    generated: tuple[Path, ...] = ()
    model: str = "opening_reader"
    overrides: tuple[tuple[str, object], ...] = ()
    init: Path | None = None
    steps: int = 750
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 75
    val_fraction: float = 0.1
    val_samples: int = 512
    eval_every: int = 250
    save_every: int = 250
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    cpu: bool = False
    mixed_precision: str = "auto"


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own ``sigma`` (N,) pixels (separable, edges replicated).

    Written here because the one image library that has it (torchvision) is not importable on
    every install this project supports (see ``lipsync.compat``); this is two grouped convolutions.
    """
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t[None] ** 2 / (2 * sigma.to(x)[:, None].clamp_min(1e-3) ** 2))
    g = (g / g.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, k)
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, g[:, None, None, :], groups=n * c)
    y = F.conv2d(y, g[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Randomly blurred, recoloured, shifted, mirrored and noisy copies of ``x`` (N, 3, H, W) in [0, 1]."""
    n = x.shape[0]

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator).to(x.device)

    blurred = gaussian_blur(x, rand(n) * 2.0 + 0.05)
    x = torch.where(rand(n, 1, 1, 1) < 0.7, blurred, x)
    x = x * (0.8 + 0.4 * rand(n, 1, 1, 1)) * (0.85 + 0.3 * rand(n, 3, 1, 1)) + 0.1 * (rand(n, 3, 1, 1) - 0.5)
    dy, dx = (int(torch.randint(-k, k + 1, (1,), generator=generator)) for k in (3, 4))
    x = torch.roll(x, (dy, dx), (2, 3))
    x = torch.where(rand(n, 1, 1, 1) < 0.5, x.flip(3), x)
    x = x + 0.02 * torch.randn(x.shape, generator=generator).to(x.device)
    return x.clamp(0.0, 1.0)


@torch.no_grad()
def evaluate_reader(model: torch.nn.Module, dataset: OpeningDataset | None, keys: list, batch_size: int,
                    device: torch.device) -> dict[str, float]:
    """``val/rmse``, ``val/r`` and ``val/r_blur`` over fixed frames (empty without val data)."""
    if dataset is None or not keys:
        return {}
    was = model.training
    model.eval()
    said, blur_said, truth = [], [], []
    for lo in range(0, len(keys), batch_size):
        batch = collate_keys(dataset, keys[lo:lo + batch_size])
        lower = batch["lower"].to(device)
        said.append(model(lower).float().cpu())
        blur_said.append(model(gaussian_blur(lower, torch.full((len(lower),), 1.5))).float().cpu())
        truth.append(batch["opening"].float())
    model.train(was)
    p, pb, y = torch.cat(said), torch.cat(blur_said), torch.cat(truth)
    return {"val/rmse": float((p - y).pow(2).mean().sqrt()),
            "val/r": sync_correlation(p.numpy(), y.numpy(), max_lag=0).correlation,
            "val/r_blur": sync_correlation(pb.numpy(), y.numpy(), max_lag=0).correlation}


def train_reader(cfg: ReaderTrainConfig) -> dict[str, float]:
    """Train a reader; writes ``OUT/reader.safetensors`` (for ``python -m lipsync.train --reader``),
    ``OUT/state.pt``, ``metrics.csv`` and ``tb/``.  Returns the last evaluation metrics."""
    acc = make_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, dict(cfg.overrides), cfg.init, ("opening_reader",))
    make = partial(OpeningDataset, face_size=model.face_size)
    splits = [train_val_datasets(make, root, cfg.val_fraction) for root in (cfg.data, *cfg.generated)]
    train_ds, val_ds = splits[0] if len(splits) == 1 else (ClipSetUnion([t for t, _ in splits]),
                                                           ClipSetUnion([v for _, v in splits]))
    keys = fixed_keys(cfg.val_samples, len(val_ds), cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, warmup_steps=min(cfg.warmup_steps, cfg.steps), total_steps=cfg.steps)
    ddp, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(ddp)

    def step(batch: dict) -> tuple[Tensor, dict[str, Tensor], int]:
        lower = augment(batch["lower"].to(acc.device))  # the global RNG: restored on resume
        with acc.autocast():
            said = ddp(lower)
        loss = F.mse_loss(10.0 * said.float(), 10.0 * batch["opening"].to(acc.device).float())
        return loss, {}, len(lower)

    run = SingleModelRun(name="reader", model=ddp, core=core, optimizer=opt, train_ds=train_ds, step=step,
                         evaluate=lambda: evaluate_reader(core, val_ds, keys, cfg.batch_size, acc.device),
                         scheduler=sched, desc="train_reader")
    return run_single_model(cfg, acc, run)
