"""Command line: MARLIN features of a video.

    python -m marlin.extract --video v.mp4 --checkpoint marlin_vit_base_ytf.encoder.pt --out feats.npy

Writes the features as ``.npy`` (``--out x.npz`` stores ``features``, ``start_times`` and
``start_frames`` together).  Bad input prints one ``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_marlin
from .cli import HelpFormatter
from .features import REDUCTIONS, VideoFeatures, extract_video

log = logging.getLogger("marlin.extract")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m marlin.extract", description="Extract MARLIN features from a video.",
        formatter_class=HelpFormatter)
    parser.add_argument("--video", required=True, help="input video (any container FFmpeg reads) or image")
    parser.add_argument("--checkpoint", required=True,
                        help="MARLIN weights: released .encoder.pt/.full.pt, Lightning .ckpt, or safetensors")
    parser.add_argument("--out", required=True, help="output .npy (features) or .npz (features + times)")
    parser.add_argument("--crop-face", action=argparse.BooleanOptionalAction, default=False,
                        help="crop the tracked face (needs mediapipe) instead of the centre square")
    parser.add_argument("--sample-rate", type=int, default=2, help="use every N-th frame")
    parser.add_argument("--stride", type=int, default=16, help="sampled frames between window starts")
    parser.add_argument("--reduction", choices=REDUCTIONS, default="none", help="combine the windows")
    parser.add_argument("--keep-seq", action=argparse.BooleanOptionalAction, default=False,
                        help="per-token features (W, N, E) instead of pooled (W, E)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--fps", type=float, default=None, help="resample the video to this rate first")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                        help="bfloat16 autocast (GPU)")
    return parser


def _save(result: VideoFeatures, out: Path) -> None:
    """Write next to the target, then rename: no half-written output on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        if out.suffix == ".npz":
            np.savez(tmp, features=result.features.numpy(), start_times=result.start_times.numpy(),
                     start_frames=result.start_frames.numpy())
        else:
            np.save(tmp, result.features.numpy())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0, or 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if out.suffix not in (".npy", ".npz"):
        return _fail(f"--out must end in .npy or .npz, got {args.out!r}")
    for name in ("sample_rate", "stride", "batch_size"):
        if getattr(args, name) < 1:
            return _fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not Path(args.video).is_file():
        return _fail(f"video not found: {args.video}")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_marlin(args.checkpoint, with_decoder=False, map_location=device)
        result = extract_video(model, args.video, crop_face=args.crop_face, sample_rate=args.sample_rate,
                               stride=args.stride, reduction=args.reduction, keep_seq=args.keep_seq,
                               batch_size=args.batch_size, fps=args.fps,
                               autocast_dtype=torch.bfloat16 if args.bf16 else None, progress=True)
    except (CheckpointError, ValueError, RuntimeError, ImportError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    _save(result, out)
    log.info("%s: %d windows -> %s %s", args.video, len(result), out, tuple(result.features.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
