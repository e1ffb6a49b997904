"""Train a mouth-opening reader: ``python -m lipsync.train_reader --data DATA --out RUN``.

The reader (``lipsync.models.OpeningReader``) reads the inner-lip opening from the lower half of
a 96 px face.  It learns from the preprocessed clips' own frames and their face-mesh landmarks
(no audio), with blur and colour augmentation so that it also reads blurry generated mouths.
``python -m lipsync.train --reader RUN/reader.safetensors --reader-wt W`` then uses it, frozen,
as a loss on the generated mouth's visible opening.  Writes ``RUN/reader.safetensors``,
``RUN/state.pt`` (``--resume``), ``RUN/metrics.csv`` (train loss; val RMSE and correlation, also
on blurred frames) and ``RUN/tb/``.  About 2 minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from marlin.cli import HelpFormatter
from marlin.training import add_run_args

from .training.common import OneLineParser, add_eval_args, check_args, parse_overrides, trainer_cli
from .training.reader_loop import ReaderTrainConfig, train_reader

__all__ = ["build_parser", "main", "cli"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m lipsync.train_reader", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="preprocessed data folder (lipsync.preprocess, with face-mesh landmarks)")
    p.add_argument("--generated", type=Path, action="append", default=[], metavar="DATA",
                   help="also read this preprocessed folder of a generator's dubs (lipsync.infer --pairs, "
                        "then lipsync.preprocess), whose landmarks measure the generated mouths, so the "
                        "reader reads them as the landmarks do (repeatable; each folder has its own "
                        "train/val split)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a reader config field, e.g. --set width=24 (repeatable)")
    p.add_argument("--init", type=Path, default=None, help="start from this reader checkpoint")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (warmup, then cosine)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=75, help="linear warmup steps")
    add_eval_args(p, val_samples=512)
    p.set_defaults(eval_every=250)
    add_run_args(p, steps=750, batch_size=64, save_every=250, log_every=10)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a, positive=("steps", "batch_size", "log_every", "save_every", "eval_every", "val_samples"),
               existing=("data", "init", "generated"))
    if a.lr <= 0 or a.weight_decay < 0 or a.warmup_steps < 0:
        p.error(f"need --lr > 0, --weight-decay >= 0 and --warmup-steps >= 0, got {a.lr}, {a.weight_decay}, "
                f"{a.warmup_steps}")
    cfg = ReaderTrainConfig(
        data=a.data, generated=tuple(a.generated), out=a.out,
        overrides=tuple(parse_overrides(a.overrides).items()), init=a.init,
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
        warmup_steps=a.warmup_steps, val_fraction=a.val_fraction, val_samples=a.val_samples,
        eval_every=a.eval_every, save_every=a.save_every, log_every=a.log_every, num_workers=a.num_workers,
        seed=a.seed, resume=a.resume, cpu=a.cpu, mixed_precision=a.mixed_precision)
    metrics = train_reader(cfg)
    if metrics:
        logging.getLogger(__name__).info("final val RMSE %.4f, correlation %.3f (blurred %.3f)",
                                         metrics["val/rmse"], metrics["val/r"], metrics["val/r_blur"])
    return 0


def cli(argv: list[str] | None = None) -> int:
    return trainer_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
