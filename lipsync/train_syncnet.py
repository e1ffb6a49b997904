"""Train a lip-sync expert: ``python -m lipsync.train_syncnet --data DATA --out RUN [--model NAME]``.

``--model syncnet_color`` (default) is Wav2Lip's 5-frame expert on 48x96 lower halves;
``--model marlin_sync_tiny`` / ``marlin_sync_base`` the 16-frame MARLIN expert (start its ViT from
MARLIN weights with ``--marlin-checkpoint``).  Negatives are audio windows shifted by
``--min-offset`` .. ``--max-offset`` frames inside the same clip.  Writes ``RUN/expert.safetensors``
(``lipsync.checkpoints`` format, for ``python -m lipsync.train --expert``), ``RUN/state.pt``
(``--resume``), ``RUN/metrics.csv`` (train/val loss and accuracy) and ``RUN/tb/``.  Launch on
many GPUs with ``accelerate launch -m lipsync.train_syncnet ...`` or ``torchrun -m ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lipsync.models import MODELS
from marlin.cli import HelpFormatter
from marlin.training import add_run_args

from .training.common import OneLineParser, add_eval_args, check_args, parse_overrides, trainer_cli
from .training.syncnet_loop import EXPERTS, SyncTrainConfig, train_syncnet

__all__ = ["build_parser", "main", "cli"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m lipsync.train_syncnet", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="preprocessed data folder (lipsync.preprocess)")
    p.add_argument("--model", default="syncnet_color",
                   choices=[k for k, s in MODELS.items() if s.architecture in EXPERTS], help="expert size")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a model config field, e.g. --set face_size=[24,48] (repeatable)")
    p.add_argument("--init", type=Path, default=None, help="start from this expert checkpoint")
    p.add_argument("--marlin-checkpoint", type=Path, default=None,
                   help="MARLIN weights for a MARLIN expert's encoder (marlin.pretrain output or release)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--max-offset", type=int, default=50, help="largest negative audio shift, frames (2 s)")
    p.add_argument("--min-offset", type=int, default=5, help="smallest negative audio shift, frames")
    add_eval_args(p, val_samples=256)
    add_run_args(p, steps=20000, batch_size=64, save_every=500, log_every=10)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a, positive=("steps", "batch_size", "log_every", "save_every", "eval_every", "val_samples",
                               "max_offset", "min_offset"),
               existing=("data", "init", "marlin_checkpoint"))
    cfg = SyncTrainConfig(
        data=a.data, out=a.out, model=a.model, overrides=tuple(parse_overrides(a.overrides).items()),
        init=a.init, marlin_checkpoint=a.marlin_checkpoint, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
        max_offset=a.max_offset, min_offset=a.min_offset, val_fraction=a.val_fraction,
        val_samples=a.val_samples,
        eval_every=a.eval_every, save_every=a.save_every, log_every=a.log_every, num_workers=a.num_workers,
        seed=a.seed, resume=a.resume, cpu=a.cpu, mixed_precision=a.mixed_precision)
    metrics = train_syncnet(cfg)
    if metrics:
        logging.getLogger(__name__).info("final val loss %.4f, accuracy %.3f", metrics["val/loss"],
                                         metrics["val/accuracy"])
    return 0


def cli(argv: list[str] | None = None) -> int:
    return trainer_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
