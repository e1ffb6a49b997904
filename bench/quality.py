"""Ground-truth lip-sync quality of a dubbed synthetic clip.

    python bench/quality.py VIDEO AUDIO [--source CLIP.json] [--max-lag 2] [--json OUT.json]

VIDEO is the dubbed output; AUDIO the audio it was dubbed with (a synthetic clip's .mp4 or
.json, so its exact phoneme timings are known; other audio falls back to a loudness estimate).
The face comes from the synthetic clip that was dubbed: its sidecar ``<clip>.json``, found next
to VIDEO or given with ``--source`` (``lipsync.data.synthetic`` writes one beside every clip).

The clip's face is re-rendered speaking AUDIO (same identity, head motion, blinks, lighting;
encoded to H.264 like any video) and three videos are measured against it:

- ``dubbed``: VIDEO;
- ``floor``: the source clip left unchanged (its mouth follows the original speech);
- ``ceiling``: the re-render itself.

For each: the correlation of the landmark-measured mouth opening with the opening AUDIO
demands (at zero lag and the best within +-max-lag frames), the share of frames with a face,
and the mean absolute error (8-bit levels) in the lip region of the re-render.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: bench/ would shadow the audio package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lipsync.data.sync_measure import measure_openings, mouth_region_error, sync_correlation  # noqa: E402
from lipsync.data.synthetic import mouth_for_audio, opening, read_sidecar, render_face  # noqa: E402
from lipsync.data.synthetic.clip import write_video  # noqa: E402


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


def evaluate(video: Path, audio: Path, source: Path, max_lag: int = 2) -> dict:
    """Measure the dubbed ``video``, the unchanged source clip and the re-render. Returns a dict of rows."""
    spec, side = read_sidecar(source)
    mouth, how = mouth_for_audio(audio, spec.fps, spec.identity.articulation)
    demanded = opening(mouth)
    ref = render_face(spec, mouth)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        render_path = write_video(Path(tmp) / "render.mp4", ref.frames, None, spec.fps)
        videos = {"dubbed": video, "floor": source.parent / side["video"], "ceiling": render_path}
        for label, path in videos.items():
            frames = read_video(path, spec.fps, len(mouth), spec.size)
            measured = measure_openings(frames)
            score = sync_correlation(measured, demanded, max_lag)
            rows[label] = {
                "video": str(path) if label != "ceiling" else "(re-render)",
                "frames": len(frames),
                "sync_r": score.correlation,
                "best_r": score.best_correlation,
                "best_lag": score.best_lag,
                "face_found": float(np.isfinite(measured).mean()),
                "mouth_l1": mouth_region_error(frames, ref.frames, ref.mouth_box),
            }
    return {"source": str(source), "audio": str(audio), "demanded_from": how, "fps": spec.fps,
            "audio_frames": len(mouth), "rows": rows}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("video", type=Path, help="dubbed video")
    p.add_argument("audio", type=Path, help="the audio it was dubbed with (a synthetic clip's .mp4 / .json)")
    p.add_argument("--source", type=Path, default=None,
                   help="sidecar (.json) of the synthetic clip that was dubbed; default: next to VIDEO")
    p.add_argument("--max-lag", type=int, default=2, help="frames of offset searched for the best correlation")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return p


def _fmt(x: float) -> str:
    return "   n/a" if not np.isfinite(x) else f"{x:6.3f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = args.source or args.video.with_suffix(".json")
    for path, what in ((args.video, "VIDEO"), (args.audio, "AUDIO"), (source, "source sidecar")):
        if not path.exists():
            hint = " (pass --source CLIP.json: the synthetic clip that was dubbed)" if what == "source sidecar" else ""
            print(f"error: {what} {path} does not exist{hint}", file=sys.stderr)
            return 2
    if args.max_lag < 0:
        print(f"error: --max-lag must be >= 0, got {args.max_lag}", file=sys.stderr)
        return 2
    try:
        result = evaluate(args.video, args.audio, source, args.max_lag)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"source {result['source']}, audio {result['audio']} ({result['audio_frames']} frames at "
          f"{result['fps']} fps, demanded opening from {result['demanded_from']})")
    print(f"{'':8s} {'sync r':>7s} {'best r':>7s} {'lag':>4s} {'face':>6s} {'mouth L1':>9s} {'frames':>7s}  video")
    for label, r in result["rows"].items():
        print(f"{label:8s} {_fmt(r['sync_r']):>7s} {_fmt(r['best_r']):>7s} {r['best_lag']:4d} "
              f"{100 * r['face_found']:5.1f}% {_fmt(r['mouth_l1']):>9s} {r['frames']:7d}  {r['video']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
