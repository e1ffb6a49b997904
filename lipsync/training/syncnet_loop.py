"""Training loop of the lip-sync experts (``SyncNetColor``, 5 frames; ``MarlinSyncNet``, 16 frames).

Recipe (REFERENCE.md 2): cosine similarity of the L2-normalised audio and video embeddings read
as the probability of being in sync, BCE against the label; negatives are audio windows shifted
inside the same clip (at most ``max_offset`` frames, default 2 s); Adam, lr 1e-4, no schedule.
A good expert reaches an eval loss of about 0.25 (0.69 is chance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from lipsync.data.datasets import SyncDataset, collate_keys, fixed_keys
from lipsync.models import SyncNetColor
from marlin.training import make_accelerator, seed_everything

from .common import bce, build_model, train_val_datasets, trainable
from .single_loop import SingleModelRun, run_single_model

log = logging.getLogger(__name__)

__all__ = ["SyncTrainConfig", "train_syncnet", "evaluate_expert"]

EXPERTS = ("syncnet_color", "marlin_sync")


@dataclass(frozen=True)
class SyncTrainConfig:
    """Everything one expert training run needs (built by ``python -m lipsync.train_syncnet``)."""

    data: Path  # preprocessed data folder
    out: Path  # run folder
    model: str = "syncnet_color"  # registry name (lipsync.models.MODELS)
    overrides: tuple[tuple[str, object], ...] = ()  # config fields changed from the registry entry
    init: Path | None = None  # start from this expert checkpoint
    marlin_checkpoint: Path | None = None  # MARLIN weights for a MARLIN expert's encoder
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    max_offset: int = 50  # frames (2 s at 25 fps)
    min_offset: int = 5  # frames
    val_fraction: float = 0.1
    val_samples: int = 256
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    cpu: bool = False
    mixed_precision: str = "auto"


def _similarity(model: torch.nn.Module, mel: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    audio, video = model(mel, lower)
    return (audio.float() * video.float()).sum(dim=1)


@torch.no_grad()
def evaluate_expert(model: torch.nn.Module, dataset: SyncDataset | None, keys: list, batch_size: int,
                    device: torch.device) -> dict[str, float]:
    """Mean BCE loss and accuracy (similarity > 0.5 means "in sync") over fixed samples."""
    if dataset is None or not keys:
        return {}
    was = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    for lo in range(0, len(keys), batch_size):
        batch = collate_keys(dataset, keys[lo:lo + batch_size])
        sim = _similarity(model, batch["mel"].to(device), batch["lower"].to(device))
        label = batch["label"].to(device)
        loss += bce(sim, label).item() * len(label)
        correct += int(((sim > 0.5).float() == label).sum())
        n += len(label)
    model.train(was)
    return {"val/loss": loss / n, "val/accuracy": correct / n}


def train_syncnet(cfg: SyncTrainConfig) -> dict[str, float]:
    """Train an expert; writes ``OUT/expert.safetensors`` (+ state.pt, metrics.csv, tb/).

    Returns the last evaluation metrics (empty when there is no val split).
    """
    acc = make_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, dict(cfg.overrides), cfg.init, EXPERTS, cfg.marlin_checkpoint)
    if isinstance(model, SyncNetColor):
        ds_args = dict(n_frames=model.n_frames, face_size=model.face_size, mel_width=16)
    else:
        ds_args = dict(n_frames=model.n_frames, face_size=model.config.face_size, mel_width=model.mel_columns)
    ds_args.update(max_offset=cfg.max_offset, min_offset=cfg.min_offset)
    train_ds, val_ds = train_val_datasets(partial(SyncDataset, **ds_args), cfg.data, cfg.val_fraction)
    keys = fixed_keys(cfg.val_samples, len(val_ds), cfg.seed)

    opt = torch.optim.Adam(trainable(model), lr=cfg.lr)
    ddp, opt = acc.prepare(model, opt)
    core = acc.unwrap_model(ddp)

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        label = batch["label"].to(acc.device)
        sim = _similarity(ddp, batch["mel"].to(acc.device), batch["lower"].to(acc.device))
        accuracy = ((sim.detach() > 0.5).float() == label).float().mean()
        return bce(sim, label), {"train/accuracy": accuracy}, len(label)

    run = SingleModelRun(name="expert", model=ddp, core=core, optimizer=opt, train_ds=train_ds, step=step,
                         evaluate=lambda: evaluate_expert(core, val_ds, keys, cfg.batch_size, acc.device),
                         meta={"max_offset": cfg.max_offset}, desc="train_syncnet")
    return run_single_model(cfg, acc, run)
