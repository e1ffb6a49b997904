"""Score generated talking-face videos: LSE-D / LSE-C, FID, LPIPS, SSIM, PSNR (and our expert's sync).

    python -m lipsync.evaluate --videos results/ --reference originals/ --metrics lse,fid,lpips,ssim,psnr

Per-video rows and their arithmetic mean go to the terminal, a JSON and a CSV file. FID is
one number for the whole set (generated frames vs reference frames). Reference videos are
matched to generated ones by file name (stem). A metric whose weight file is missing prints
one line saying where to put the file, and the others still run. See docs/usage/evaluate.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from lipsync.metrics import clips, report
from lipsync.metrics.evaluator import PAIR_METRICS, DeviceError, Evaluator
from lipsync.metrics.weights import MissingWeights, weights_dir
from marlin.cli import HelpFormatter

log = logging.getLogger("lipsync.evaluate")

METRICS = ("lse", "expert", "fid", "lpips", "ssim", "psnr")
DEFAULT_METRICS = "lse,expert,fid,lpips,ssim,psnr"
NEEDS_REFERENCE = ("fid", *PAIR_METRICS)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")


class EvalInputError(ValueError):
    """Bad command-line input (reported as one ``error:`` line, exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lipsync.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--videos",
        required=True,
        help="generated videos: a folder, a video file, or a text file "
        "listing one video path per line (relative paths from the list's folder)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="folder of reference (ground-truth) videos, matched to the "
        "generated ones by file name; needed by fid, lpips, ssim, psnr",
    )
    p.add_argument(
        "--metrics", default=DEFAULT_METRICS, help=f"comma-separated subset of {','.join(METRICS)}"
    )
    p.add_argument(
        "--lse-mode",
        choices=clips.LSE_MODES,
        default="wild",
        help="SyncNet input: 'whole' resizes "
        "whole frames to 224 (LRS2-style face-crop clips, as the published LRS2 scores); 'wild' tracks "
        "and crops the face (real videos)",
    )
    p.add_argument(
        "--region",
        choices=clips.REGIONS,
        default="face",
        help="FID / LPIPS / SSIM / PSNR on face crops or on full frames",
    )
    p.add_argument("--crop-size", type=int, default=224, help="side of the face crops for --region face")
    p.add_argument(
        "--syncnet-v2",
        default=None,
        help=f"SyncNet v2 weights (when omitted: syncnet_v2.model in {weights_dir()})",
    )
    p.add_argument(
        "--fid-weights",
        default=None,
        help="pytorch-fid Inception weights "
        "(when omitted: pt_inception-2015-12-05-6726825d.pth in the weights folder)",
    )
    p.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex", help="LPIPS backbone")
    p.add_argument(
        "--lpips-weights",
        default=None,
        help="torchvision ImageNet weights of the LPIPS backbone "
        "(when omitted: alexnet-owt-7be5be79.pth etc. in the weights folder)",
    )
    p.add_argument(
        "--lpips-lin",
        default=None,
        help="LPIPS linear-layer weights (when omitted: the v0.1 file shipped in the lpips package)",
    )
    p.add_argument(
        "--sync-expert",
        default=None,
        help="this project's sync expert checkpoint for the 'expert' "
        "metric (when omitted: sync_expert.safetensors in the weights folder)",
    )
    p.add_argument(
        "--detector",
        choices=("mediapipe", "haar", "fan"),
        default="mediapipe",
        help="face detector for face tracking",
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=20, help="SyncNet windows per forward pass")
    p.add_argument("--json", default="evaluation.json", help="JSON output path ('' to skip)")
    p.add_argument("--csv", default="evaluation.csv", help="CSV output path ('' to skip)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar"
    )
    return p


def list_videos(spec: str | Path) -> list[Path]:
    """Videos named by ``spec``: a folder (its video files, sorted), a video file, or a text list."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise EvalInputError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        return found
    if not path.is_file():
        raise EvalInputError(f"{path}: no such file or folder")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return [path]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{path}: not a video or a readable list of videos ({e})") from e
    videos = [(path.parent / line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    missing = [str(v) for v in videos if not v.is_file()]
    if not videos:
        raise EvalInputError(f"{path}: the list names no videos")
    if missing:
        raise EvalInputError(f"{path}: {len(missing)} listed videos do not exist (first: {missing[0]})")
    return videos


def match_references(videos: Sequence[Path], reference: Path) -> dict[Path, Path | None]:
    """Reference video of each generated one: the file in ``reference`` with the same stem."""
    by_stem: dict[str, Path] = {}
    for p in list_videos(reference):
        by_stem.setdefault(p.stem, p)
    return {v: by_stem.get(v.stem) for v in videos}


def parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise EvalInputError(
            f"unknown metric(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """Evaluate as the parsed ``args`` say; table to ``out``, notices to ``err`` (default stdout / stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    metrics = parse_metrics(args.metrics)
    explicit = args.metrics != DEFAULT_METRICS
    videos = list_videos(args.videos)
    notices: list[str] = []
    refs: dict[Path, Path | None] = {v: None for v in videos}
    ref_all: list[Path] = []
    if args.reference is not None:
        if not Path(args.reference).expanduser().is_dir():
            raise EvalInputError(f"--reference {args.reference}: not a folder of videos")
        ref_all = list_videos(args.reference)
        refs = match_references(videos, Path(args.reference).expanduser())
        unmatched = [v.name for v, r in refs.items() if r is None]
        if unmatched:
            notices.append(
                f"no reference video for {len(unmatched)} of {len(videos)} (e.g. {unmatched[0]}); "
                "their LPIPS/SSIM/PSNR are left empty"
            )
    else:
        wanted = [m for m in metrics if m in NEEDS_REFERENCE]
        if wanted and explicit:
            raise EvalInputError(f"--reference is needed for {', '.join(wanted)}")
        if wanted:
            notices.append(f"no --reference: skipping {', '.join(wanted)}")
        metrics = [m for m in metrics if m not in NEEDS_REFERENCE]
    if args.crop_size < 16:
        raise EvalInputError(f"--crop-size must be at least 16, got {args.crop_size}")
    if args.batch_size < 1:
        raise EvalInputError(f"--batch-size must be positive, got {args.batch_size}")

    def flush_notices() -> None:
        for line in notices:
            print(f"warning: {line}", file=err)
        notices.clear()

    ev = Evaluator(args, metrics, notices)  # DeviceError for a bad --device
    flush_notices()
    if not ev.metrics:
        raise EvalInputError("no metric can run (see the warnings above)")
    from tqdm import tqdm

    rows = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for video in tqdm(videos, desc="evaluating", unit="video", disable=not args.progress, file=err):
                rows.append(ev.score(video, refs.get(video)))
            matched = {r for r in refs.values() if r is not None}
            fid = ev.fid_result(p for p in ref_all if p not in matched)
        for msg in dict.fromkeys(str(w.message).splitlines()[0] for w in caught):
            notices.append(msg)
    finally:
        ev.close()
    summary = report.mean_row(rows)
    flush_notices()
    print(report.format_table(rows, summary, fid), file=out)
    result = {
        "metrics": ev.metrics,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "csv")},
        "videos": rows,
        "mean": summary,
        "fid": fid,
        "notes": {"expert_sync": report.EXPERT_NOTE} if "expert" in ev.metrics else {},
    }
    if args.json:
        print(f"wrote {report.write_json(args.json, result)}", file=err)
    if args.csv:
        print(f"wrote {report.write_csv(args.csv, rows, summary, fid)}", file=err)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run(args)
    except (EvalInputError, DeviceError, MissingWeights) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
