"""``python -m lipsync.data.synthetic --out DIR --clips N [--seed S]``: write a synthetic data set."""

from __future__ import annotations

import argparse
import logging
import sys

from marlin.cli import HelpFormatter

from .generate import generate
from .speech import EspeakError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like WIDTHxHEIGHT (e.g. 256x256), got {text!r}"
        ) from None
    if not (64 <= w <= 4096 and 64 <= h <= 4096) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be even and in 64..4096")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m lipsync.data.synthetic",
        description="Generate synthetic talking-face clips (mp4 with audio) with ground-truth mouth "
        "parameters, face boxes and re-renderable identities.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--clips", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0, help="data-set seed; the same seed gives the same clips")
    p.add_argument("--min-duration", type=float, default=2.0, help="shortest clip, seconds")
    p.add_argument("--max-duration", type=float, default=5.0, help="longest clip, seconds")
    p.add_argument("--size", type=_size, default=(256, 256), metavar="WxH", help="video size")
    p.add_argument("--fps", type=int, default=25, help="frame rate")
    p.add_argument(
        "--photo-fraction",
        type=float,
        default=0.2,
        help="share of clips whose face comes from the shipped photos instead of a drawn face",
    )
    p.add_argument(
        "--identities",
        type=int,
        default=None,
        help="reuse this many faces across the clips (default: a new face per clip)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="regenerate clips that already exist (otherwise they are kept: resumable)",
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checks = [
        (args.clips >= 1, f"--clips must be >= 1, got {args.clips}"),
        (
            0.2 < args.min_duration <= args.max_duration,
            f"need 0.2 < --min-duration <= --max-duration, got {args.min_duration} and {args.max_duration}",
        ),
        (1 <= args.fps <= 120, f"--fps must be in 1..120, got {args.fps}"),
        (0.0 <= args.photo_fraction <= 1.0, f"--photo-fraction must be in [0, 1], got {args.photo_fraction}"),
        (
            args.identities is None or args.identities >= 1,
            f"--identities must be >= 1, got {args.identities}",
        ),
        (args.workers >= 1, f"--workers must be >= 1, got {args.workers}"),
    ]
    for ok, message in checks:
        if not ok:
            print(f"error: {message}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = generate(
            args.out,
            args.clips,
            args.seed,
            args.min_duration,
            args.max_duration,
            args.size,
            args.fps,
            args.photo_fraction,
            args.identities,
            args.workers,
            args.overwrite,
            args.progress,
        )
    except EspeakError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} clips and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
