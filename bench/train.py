"""Benchmark the lip-sync trainers: training samples per second, and the data loader alone.

    python bench/train.py                         # tiny and paper-scale configs on the CPU
    python bench/train.py --scales tiny --threads 1
    python bench/train.py --device cuda           # on a GPU (bf16 autocast, as the trainers use)

Each configuration runs the real trainer (``lipsync.training``: data loader, forward, losses,
backward, optimiser steps, GAN discriminator step when on) for ``--steps`` steps on a small
generated data set and reports samples (clips of 5 or 16 frames) per second over the steps
after the first (warm-up).  The loader figure is the dataset + DataLoader alone, so a slow
loader is visible next to the model cost.  Figures on a shared machine vary; threads matter a
lot (oversubscribed cores spin: compare ``--threads 1``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lipsync.data.datasets import LipSyncDataset, SyncDataset  # noqa: E402
from lipsync.training import GeneratorTrainConfig, SyncTrainConfig, train_generator, train_syncnet  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402
from marlin.data import write_clip  # noqa: E402
from marlin.training import ResumableBatchSampler, make_loader  # noqa: E402

#: (name, trainer, model, overrides, batch size, extra settings) per scale
CONFIGS = {
    "tiny": [
        ("expert marlin_sync_tiny", "sync", "marlin_sync_tiny", {"face_size": (24, 48)}, 8, {}),
        ("generator marlin_lip_tiny (L1)", "gen", "marlin_lip_tiny", {"img_size": 48}, 2, {"disc_wt": 0.0}),
    ],
    "paper": [
        ("expert syncnet_color", "sync", "syncnet_color", {}, 8, {}),
        ("expert marlin_sync_base", "sync", "marlin_sync_base", {}, 2, {}),
        ("generator wav2lip + GAN", "gen", "wav2lip", {}, 4, {}),
        ("generator marlin_lip_base + GAN", "gen", "marlin_lip_base", {}, 1, {}),
    ],
}


def make_data(root: Path, n_clips: int, n_frames: int, size: int) -> Path:
    """Clips in the preprocessed layout: random-ish faces and noise audio (speed only)."""
    rng = np.random.default_rng(0)
    for i in range(n_clips):
        frames = rng.integers(0, 255, (n_frames, size, size, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(n_frames * 640)).astype(np.float32)
        write_clip(root, f"c{i}", frames, audio=audio, meta={"identity": f"p{i}"})
    return root


def bench_trainer(kind: str, model: str, overrides: dict, batch: int, extra: dict, data: Path, steps: int,
                  cpu: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(data=data, out=Path(tmp), model=model, overrides=tuple(overrides.items()),
                      steps=steps + 1, batch_size=batch, val_samples=1, eval_every=10**6, save_every=10**6,
                      log_every=1, cpu=cpu, **extra)
        if kind == "sync":
            train_syncnet(SyncTrainConfig(**common))
        else:
            train_generator(GeneratorTrainConfig(**common, sample_every=0))
        with open(Path(tmp) / "metrics.csv") as f:
            rows = [float(r["value"]) for r in csv.DictReader(f) if r["name"] == "samples_per_s"]
    return float(np.mean(rows[1:])) if len(rows) > 1 else rows[-1]


def bench_loader(data: Path, n_frames: int, size: int, batch: int, workers: int, batches: int = 10) -> tuple:
    out = []
    for ds in (LipSyncDataset(data, split="all", n_frames=n_frames, size=size),
               SyncDataset(data, split="all", n_frames=n_frames, face_size=(size // 2, size))):
        loader = iter(make_loader(ds, ResumableBatchSampler(len(ds), batch), num_workers=workers))
        next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        out.append(batches * batch / (time.perf_counter() - start))
    return tuple(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--scales", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--steps", type=int, default=3, help="timed steps per trainer (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to time")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {a.device}")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", 4, 60, 96)
        print("\n## data loader alone (samples/s; 96 px crops)")
        print("| samples | workers | generator items | expert items |\n|---|---|---|---|")
        for frames in (5, 16):
            for w in a.workers:
                gen, sync = bench_loader(data, frames, 96, 8, w)
                print(f"| {frames} frames | {w} | {gen:.1f} | {sync:.1f} |")
        print("\n## trainers (samples/s, one sample = one 5- or 16-frame window)")
        print("| scale | trainer | batch | samples/s |\n|---|---|---|---|")
        for scale in a.scales:
            for name, kind, model, overrides, batch, extra in CONFIGS[scale]:
                try:
                    sps = bench_trainer(kind, model, overrides, batch, extra, data, a.steps,
                                        a.device == "cpu")
                    print(f"| {scale} | {name} | {batch} | {sps:.2f} |", flush=True)
                except (RuntimeError, ValueError) as e:  # e.g. out of memory
                    reason = str(e).splitlines()[0][:80]
                    print(f"| {scale} | {name} | {batch} | failed: {reason} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
