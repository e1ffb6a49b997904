"""Ground-truth lip-sync quality of a dubbed synthetic clip.

    python bench/quality.py VIDEO AUDIO [--source CLIP.json] [--max-lag 2] [--json OUT.json]
    python bench/quality.py --check N [--seed S] [--duration 3]

VIDEO is the dubbed output; AUDIO the audio it was dubbed with (a synthetic clip's .mp4 or
.json, so its exact phoneme timings are known; other audio falls back to a loudness estimate).
The face comes from the synthetic clip that was dubbed: its sidecar ``<clip>.json``, found next
to VIDEO (``VIDEO.json``, or ``<clip>.json`` for ``<clip>_dubbed.mp4``) or given with
``--source`` (``lipsync.data.synthetic`` writes one beside every clip).

The clip's face is re-rendered speaking AUDIO (same identity, head motion, blinks, lighting;
encoded to H.264 like any video) and three videos (four with ``--pipeline``) are measured against it:

- ``dubbed``: VIDEO;
- ``floor``: the source clip left unchanged (its mouth follows the original speech);
- ``ceiling``: the re-render itself;
- ``pipeline`` (``--pipeline``): the re-render dubbed by a generator that returns the face crop it
  is given unchanged (:class:`PassThrough`), i.e. what a perfect generator would score: the
  cost of crop -> resize to the model's size -> blend back -> encode alone.  ``--pipeline-blur
  SIGMA`` blurs what it returns: a perfect generator that draws blurred.

For each: the correlation of the landmark-measured mouth opening with the opening AUDIO
demands (at zero lag and the best within +-max-lag frames), the share of frames with a face,
and the mean absolute error (8-bit levels) in the lip region of the re-render.

``--check N`` instead generates N clips and prints how often the face pipeline finds the face
(per identity kind) and the ceiling correlation on each clip's own frames.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: bench/ would shadow the audio package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lipsync.data.sync_measure import measure_openings, mouth_region_sums, sync_correlation  # noqa: E402
from lipsync.data.synthetic import mouth_for_audio, opening, read_sidecar, render_face  # noqa: E402
from lipsync.data.synthetic.clip import write_video  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402


def read_video(path: Path, fps: float, n: int, size: tuple[int, int]) -> np.ndarray:
    """Up to ``n`` frames of ``path`` at ``fps``, resized to ``size`` (h, w) when they differ."""
    from marlin.video import iter_frames

    frames = []
    for frame in iter_frames(path, fps=fps):
        if len(frames) >= n:
            break
        img = frame.image
        if img.shape[:2] != tuple(size):
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        frames.append(img)
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


class PassThrough(torch.nn.Module):
    """A "generator" that returns the reference it is given (at inference, the face crop itself):
    a perfect generator, for ``--pipeline``; with ``blur`` (Gaussian sigma in pixels of its
    ``img_size``), a perfect one that draws that blurred, for ``--pipeline-blur``."""

    def __init__(self, img_size: int = 96, blur: float = 0.0) -> None:
        super().__init__()
        self.img_size, self.blur = img_size, blur

    def forward(self, faces: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        out = faces[:, 3:6]
        if self.blur <= 0:
            return out
        from lipsync.training.reader_loop import gaussian_blur

        x = out.float()
        sigma = torch.full((x.shape[0],), self.blur)
        return gaussian_blur(x, sigma, radius=max(1, math.ceil(3 * self.blur))).to(out.dtype)


def evaluate(video: Path, audio: Path, source: Path, max_lag: int = 2, pipeline_size: int | None = None,
             pipeline_blur: float = 0.0, **dub_options) -> dict:
    """Measure the dubbed ``video``, the unchanged source clip and the re-render (and, with
    ``pipeline_size``, the re-render dubbed at that face size by :class:`PassThrough` with
    ``dub_options``, its output blurred by ``pipeline_blur`` px). Returns a dict of rows (each
    with its lip error per frame as well) and the opening each frame demands and the source's own."""
    spec, side = read_sidecar(source)
    mouth, how = mouth_for_audio(audio, spec.fps, spec.identity.articulation)
    demanded = opening(mouth)
    ref = render_face(spec, mouth)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        render_path = write_video(Path(tmp) / "render.mp4", ref.frames, None, spec.fps)
        videos = {"dubbed": video, "floor": source.parent / side["video"], "ceiling": render_path}
        if pipeline_size:
            from lipsync import LipSync

            videos["pipeline"] = Path(tmp) / "pipeline.mp4"
            perfect = PassThrough(pipeline_size, pipeline_blur)
            LipSync(perfect, device="cpu").dub(render_path, audio, videos["pipeline"], **dub_options)
        for label, path in videos.items():
            frames = read_video(path, spec.fps, len(mouth), spec.size)
            measured = measure_openings(frames)
            score = sync_correlation(measured, demanded, max_lag)
            totals, pixels = mouth_region_sums(frames, ref.frames, ref.mouth_box)
            rows[label] = {
                "video": {"ceiling": "(re-render)", "pipeline": "(re-render through the pipeline)"}.get(
                    label, str(path)),
                "frames": len(frames),
                "sync_r": score.correlation,
                "best_r": score.best_correlation,
                "best_lag": score.best_lag,
                "face_found": float(np.isfinite(measured).mean()),
                "mouth_l1": float(totals.sum() / pixels.sum()) if pixels.sum() else float("nan"),
                "frame_l1_sum": totals.tolist(),  # per frame: the lip error's sum and pixel count
                "frame_pixels": pixels.tolist(),
            }
    return {
        "source": str(source),
        "audio": str(audio),
        "demanded_from": how,
        "fps": spec.fps,
        "audio_frames": len(mouth),
        "demanded": demanded.tolist(),  # per frame, in the renderer's units (0 closed, 1 widest)
        "own": opening(np.load(source.parent / side["track"])["mouth"]).tolist(),  # the source's own
        "rows": rows,
    }


def check_generator(n: int, seed: int = 0, duration: float = 3.0, photo_fraction: float = 0.2) -> dict:
    """Detection rate and ceiling correlation over ``n`` freshly generated clips (frames in memory)."""
    from tqdm import tqdm

    from lipsync.data.synthetic import clip_seed, sample_clip_spec, synthesize_clip

    per_kind: dict[str, list[int]] = {}
    rs, gen_s = [], 0.0
    for k in tqdm(range(n), desc="clips", unit="clip"):
        t0 = time.perf_counter()
        spec = sample_clip_spec(clip_seed(seed, k), duration, photo_fraction=photo_fraction)
        clip = synthesize_clip(spec)
        gen_s += time.perf_counter() - t0
        measured = measure_openings(clip.frames)
        found = per_kind.setdefault(spec.identity.kind, [0, 0])
        found[0] += int(np.isfinite(measured).sum())
        found[1] += len(measured)
        rs.append(sync_correlation(measured, opening(clip.mouth), max_lag=0).correlation)
    rs_a = np.asarray(rs)
    total = [sum(v[0] for v in per_kind.values()), sum(v[1] for v in per_kind.values())]
    return {
        "clips": n,
        "detection": {kind: v[0] / v[1] for kind, v in {**per_kind, "all": total}.items()},
        "frames": total[1],
        "ceiling_r": {
            "median": float(np.median(rs_a)),
            "min": float(rs_a.min()),
            "above_0.8": float((rs_a > 0.8).mean()),
        },
        "generation_s_per_clip_s": gen_s / (n * duration),
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def default_source(video: Path) -> Path:
    """The sidecar of the clip that was dubbed: ``<video>.json``, or ``<clip>.json`` for ``<clip>_dubbed.mp4``
    (the inference CLI's default output name)."""
    own = video.with_suffix(".json")
    if not own.exists() and video.stem.endswith("_dubbed"):
        return video.with_name(video.stem[: -len("_dubbed")] + ".json")
    return own


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("video", type=Path, nargs="?", help="dubbed video")
    p.add_argument(
        "audio", type=Path, nargs="?", help="the audio it was dubbed with (a synthetic clip's .mp4 / .json)"
    )
    p.add_argument(
        "--check",
        type=int,
        default=None,
        metavar="N",
        help="instead: generate N clips and print the face detection rate and ceiling correlation",
    )
    p.add_argument("--seed", type=int, default=0, help="with --check: data-set seed")
    p.add_argument("--duration", type=float, default=3.0, help="with --check: clip length in seconds")
    p.add_argument(
        "--source",
        type=Path,
        default=None,
        help="sidecar (.json) of the synthetic clip that was dubbed; default: VIDEO.json, or CLIP.json "
        "for CLIP_dubbed.mp4",
    )
    p.add_argument(
        "--max-lag", type=int, default=2, help="frames of offset searched for the best correlation"
    )
    p.add_argument(
        "--pipeline",
        type=int,
        default=None,
        metavar="SIZE",
        help="also dub the re-render with a generator that returns its input crop at SIZE px (e.g. 96): "
        "what a perfect generator would score through crop, resize, blend and encode",
    )
    p.add_argument(
        "--pipeline-blur",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="with --pipeline: blur that perfect generator's output (Gaussian sigma, px of SIZE): how "
        "sharp a generator must be for a given lip-region error",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def _fmt(x: float) -> str:
    return "   n/a" if not np.isfinite(x) else f"{x:6.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check is not None:
        if args.check < 1 or args.duration <= 0.2:
            print(
                f"error: need --check >= 1 and --duration > 0.2, got {args.check}, {args.duration}",
                file=sys.stderr,
            )
            return 2
        result = check_generator(args.check, args.seed, args.duration)
        det = ", ".join(f"{k} {100 * v:.1f}%" for k, v in result["detection"].items())
        r = result["ceiling_r"]
        print(f"{result['clips']} clips, {result['frames']} frames: face found {det}")
        print(
            f"ceiling sync r (landmarks vs ground truth): median {r['median']:.3f}, min {r['min']:.3f}, "
            f"{100 * r['above_0.8']:.0f}% of clips above 0.8"
        )
        print(f"generation: {result['generation_s_per_clip_s']:.2f} s per second of video")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if args.video is None or args.audio is None:
        print("error: give VIDEO and AUDIO (or --check N)", file=sys.stderr)
        return 2
    source = args.source or default_source(args.video)
    for path, what in ((args.video, "VIDEO"), (args.audio, "AUDIO"), (source, "source sidecar")):
        if not path.exists():
            hint = (
                " (pass --source CLIP.json: the synthetic clip that was dubbed)"
                if what == "source sidecar"
                else ""
            )
            print(f"error: {what} {path} does not exist{hint}", file=sys.stderr)
            return 2
    if args.max_lag < 0:
        print(f"error: --max-lag must be >= 0, got {args.max_lag}", file=sys.stderr)
        return 2
    if args.pipeline is not None and args.pipeline < 16:
        print(f"error: --pipeline must be a face size of at least 16 px, got {args.pipeline}",
              file=sys.stderr)
        return 2
    if args.pipeline_blur < 0 or (args.pipeline_blur and args.pipeline is None):
        print(f"error: --pipeline-blur needs --pipeline and must be >= 0, got {args.pipeline_blur}",
              file=sys.stderr)
        return 2
    try:
        result = evaluate(args.video, args.audio, source, args.max_lag, args.pipeline, args.pipeline_blur)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"source {result['source']}, audio {result['audio']} ({result['audio_frames']} frames at "
        f"{result['fps']} fps, demanded opening from {result['demanded_from']})"
    )
    print(
        f"{'':8s} {'sync r':>7s} {'best r':>7s} {'lag':>4s} {'face':>6s} {'mouth L1':>9s} "
        f"{'frames':>7s}  video"
    )
    for label, r in result["rows"].items():
        print(
            f"{label:8s} {_fmt(r['sync_r']):>7s} {_fmt(r['best_r']):>7s} {r['best_lag']:4d} "
            f"{100 * r['face_found']:5.1f}% {_fmt(r['mouth_l1']):>9s} {r['frames']:7d}  {r['video']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
