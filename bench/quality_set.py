"""Ground-truth lip-sync quality of a checkpoint over many held-out synthetic clips.

    python bench/quality_set.py --clips data/synth --ids data/prep/val.txt --checkpoint C [--pairs 8]

Each held-out clip is dubbed (``lipsync.LipSync``) with the audio of the next held-out clip
(``--offset K``: the K-th next, for a second, independent set of pairs),
then measured with ``bench/quality.py``'s ``evaluate``: the correlation of the mouth opening
measured in the frames with the opening the new audio demands, and the lip-region error against
a re-render of the same face speaking that audio. Printed for the dubbed output, the unchanged
input (floor) and the re-render (ceiling), per pair and averaged; with ``--pipeline`` also for
the re-render dubbed by a generator that returns its input crop (what a perfect generator of the
checkpoint's face size would score; ``--pipeline-blur SIGMA``: one that draws blurred).
``--crf`` sets the dubs' x264 quality; ``--pass-through`` dubs with a generator that returns its
input crop instead, so the dubbed row is what crop, blend and a second encode cost on their own.
``--by-change`` also breaks the lip error down by how far each frame's demanded opening is from
the source frame's own: the frames the dub must redraw, and those it should leave as they are.
``--json`` keeps the figures (per frame as well).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

# Run as `python bench/quality_set.py`, bench/ comes first on sys.path and its marlin.py would
# shadow the marlin package: put the repository root in front.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sibling(name: str):
    """Load a sibling bench script by path (bench/ on sys.path would shadow the marlin package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


from lipsync.inference.options import PRECISIONS  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402

LABELS = ("dubbed", "floor", "ceiling")
CHANGE_EDGES = (0.0, 0.05, 0.1, 0.2, 0.4, math.inf)  # |demanded - own| opening, renderer's units


def by_change(results: list[dict], labels: tuple[str, ...], edges=CHANGE_EDGES) -> list[dict]:
    """The lip error of each row over the frames whose demanded opening is a given distance from
    the source frame's own (``edges``, in the renderer's units, 0 closed to 1 widest), pooled over
    all pairs and weighted by pixels as the mean is; with each group's share of the frames and of
    the first row's (the dub's) summed error. Frames past the shorter of the two tracks are left
    out."""
    gaps, sums, pixels = [], {label: [] for label in labels}, {label: [] for label in labels}
    for res in results:
        n = min(len(res["demanded"]), len(res["own"]),
                *(len(res["rows"][label]["frame_pixels"]) for label in labels))
        gaps.append(np.abs(np.asarray(res["demanded"][:n]) - np.asarray(res["own"][:n])))
        for label in labels:
            sums[label].append(np.asarray(res["rows"][label]["frame_l1_sum"][:n], float))
            pixels[label].append(np.asarray(res["rows"][label]["frame_pixels"][:n], float))
    gap = np.concatenate(gaps)
    sums = {label: np.concatenate(v) for label, v in sums.items()}
    pixels = {label: np.concatenate(v) for label, v in pixels.items()}
    total = sums[labels[0]].sum()
    groups = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (gap >= lo) & (gap < hi)
        group = {"from": lo, "to": None if math.isinf(hi) else hi, "frames": int(inside.sum()),  # None: open
                 "frame_share": float(inside.mean()) if len(gap) else float("nan"),
                 "error_share": float(sums[labels[0]][inside].sum() / total) if total else float("nan")}
        for label in labels:
            count = pixels[label][inside].sum()
            group[label] = float(sums[label][inside].sum() / count) if count else float("nan")
        groups.append(group)
    return groups


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--clips", type=Path, required=True, help="folder of lipsync.data.synthetic clips")
    p.add_argument("--ids", type=Path, required=True, help="file listing held-out clip ids (e.g. val.txt)")
    p.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the shipped one)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the generator's precision, as lipsync.infer's --precision")
    p.add_argument("--pairs", type=int, default=8, help="number of (video, other audio) pairs")
    p.add_argument("--offset", type=int, default=1,
                   help="dub clip k with the audio of clip k + offset (in the sorted held-out list)")
    p.add_argument("--blend", default=None, choices=("lower_face", "mouth", "crop"),
                   help="blend region of the dub (default: the dubbing default)")
    p.add_argument("--color-match", action="store_true", help="dub with colour matching")
    p.add_argument("--keep-detail", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the frame's fine detail where the generator left the face unchanged "
                        "(default: the dubbing default, on)")
    p.add_argument("--pipeline", action="store_true",
                   help="also score a perfect generator of the checkpoint's face size (the re-render "
                        "through crop, resize, blend and encode)")
    p.add_argument("--pipeline-blur", type=float, default=0.0, metavar="SIGMA",
                   help="with --pipeline: that perfect generator's output blurred (Gaussian sigma in px "
                        "of its face size): how sharp a generator must be for a given lip error")
    p.add_argument("--crf", type=int, default=None,
                   help="x264 constant rate factor of the dubs (default: the dubbing default, 18); "
                        "0 is lossless but still 4:2:0 colour")
    p.add_argument("--pass-through", action="store_true",
                   help="dub with a generator that returns its input crop (96 px) instead of a "
                        "checkpoint: the dubbed row is then the source sent through crop, blend and "
                        "encode, what writing a new video costs on its own")
    p.add_argument("--by-change", action="store_true",
                   help="also break the lip error down by how far each frame's demanded opening is "
                        "from the source frame's own (where the dub has to redraw, where it should "
                        "leave the mouth as it is)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lipsync import DubError, DubOptions, LipSync
    from lipsync.inference.plan import resolve_dtype

    ids = [line.split("_")[0] + "_" + line.split("_")[1] for line in args.ids.read_text().split()]
    ids = sorted(dict.fromkeys(ids))  # preprocessed runs may be named <clip>_<run>; keep clips once
    if len(ids) < 2:
        print("error: need at least two held-out clips", file=sys.stderr)
        return 2
    if args.offset % len(ids) == 0:
        print(f"error: --offset {args.offset} pairs each of the {len(ids)} clips with its own audio",
              file=sys.stderr)
        return 2
    if args.pipeline_blur < 0 or (args.pipeline_blur and not args.pipeline):
        print(f"error: --pipeline-blur needs --pipeline and must be >= 0, got {args.pipeline_blur}",
              file=sys.stderr)
        return 2
    options = {"color_match": True} if args.color_match else {}  # the same dubbing options for every pair
    if args.blend:
        options["blend"] = args.blend
    if args.keep_detail is not None:
        options["keep_detail"] = args.keep_detail
    if args.crf is not None:
        options["crf"] = args.crf
    try:
        DubOptions().replace(**options)  # the dubbing's own checks (--crf's range), before any work
    except DubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.pass_through and (args.checkpoint or args.precision != "auto"):
        print("error: --pass-through dubs without a checkpoint: leave out --checkpoint and --precision",
              file=sys.stderr)
        return 2
    quality = _sibling("quality")
    if args.pass_through:
        dubber = LipSync(quality.PassThrough(96), device="cpu")
    else:
        try:  # a missing or foreign checkpoint, or a precision this device lacks (fp16 on a CPU)
            dubber = LipSync.from_checkpoint(args.checkpoint, precision=args.precision)
            resolve_dtype(args.precision, dubber.device)  # the runner is built at the first dub: check now
        except DubError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    size = int(getattr(dubber.model, "img_size", 96)) if args.pipeline else None  # of the perfect generator
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(min(args.pairs, len(ids))):
            clip, other = ids[k], ids[(k + args.offset) % len(ids)]
            video, audio = args.clips / f"{clip}.mp4", args.clips / f"{other}.mp4"
            out = Path(tmp) / f"{clip}_dubbed.mp4"
            dubber.dub(video, audio, out, **options)
            res = quality.evaluate(out, audio, args.clips / f"{clip}.json", pipeline_size=size,
                                   pipeline_blur=args.pipeline_blur, **options)
            results.append(res)
            r = res["rows"]
            print(f"{clip} <- {other}: sync r dubbed {r['dubbed']['sync_r']:.3f}"
                  f" floor {r['floor']['sync_r']:.3f} ceiling {r['ceiling']['sync_r']:.3f}"
                  f" | mouth L1 dubbed {r['dubbed']['mouth_l1']:.2f} floor {r['floor']['mouth_l1']:.2f}"
                  + (f" pipeline {r['pipeline']['mouth_l1']:.2f}" if args.pipeline else ""),
                  flush=True)
    labels = LABELS + (("pipeline",) if args.pipeline else ())
    summary = {label: {key: float(np.nanmean([res["rows"][label][key] for res in results]))
                       for key in ("sync_r", "best_r", "mouth_l1", "face_found")} for label in labels}
    print(f"\nmean over {len(results)} pairs")
    print(f"{'':10s} {'sync r':>8s} {'best r':>8s} {'mouth L1':>9s} {'face':>6s}")
    for label in labels:
        s = summary[label]
        print(f"{label:10s} {s['sync_r']:8.3f} {s['best_r']:8.3f} {s['mouth_l1']:9.2f}"
              f" {s['face_found']:6.2f}")
    report = {"pairs": results, "mean": summary}
    if args.by_change:
        report["by_change"] = groups = by_change(results, labels)
        print(f"\nlip error by |demanded - own opening| (renderer's units), over all {len(results)} pairs")
        print(f"{'gap':>10s} {'frames':>7s} " + " ".join(f"{label:>9s}" for label in labels)
              + f" {'share of the ' + labels[0] + ' error':>26s}")
        for g in groups:
            span = f"{g['from']:.2f}-" + ("" if g["to"] is None else f"{g['to']:.2f}")
            print(f"{span:>10s} {g['frame_share']:7.0%} " + " ".join(f"{g[label]:9.2f}" for label in labels)
                  + f" {g['error_share']:26.0%}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
