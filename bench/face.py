"""Frames per second of the face pipeline: read + detect + landmarks + crop.

Generates a talking-head-like clip (a real face photo drifting and zooming) at each requested
height, writes it with libx264, then times

- ``decode``: ``marlin.video.iter_frames`` alone;
- ``pipeline``: decode + ``FaceTracker.push`` (detection on the frame downscaled to
  ``--detect-size``, 478-point mesh on the target's region) + ``marlin_crop`` (224) and
  ``wav2lip_crop`` (96) of every found frame.

Usage::

    python -m bench.face                       # 720p and 1080p, 100 frames each
    python -m bench.face --heights 720 --frames 200 --mesh-mode static --detect-every 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: bench/marlin.py would shadow marlin
    import sys

    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from marlin.cli import HelpFormatter  # noqa: E402


def face_clip(path: Path, height: int, n: int) -> Path:
    """Write ``n`` frames (16:9, ``height`` rows) of the astronaut photo moving along a path."""
    import skimage.data

    photo = skimage.data.astronaut()
    width = int(round(height * 16 / 9 / 2)) * 2
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i in range(n):
            s = 0.9 * height / photo.shape[0] * (1 + 0.15 * np.sin(i / 30))
            cx = width / 2 + 0.1 * width * np.sin(i / 20)
            cy = height / 2 + 0.03 * height * np.cos(i / 25)
            ph, pw = photo.shape[:2]
            m = np.array([[s, 0, cx - s * pw / 2], [0, s, cy - s * ph / 2]], np.float32)
            frame = cv2.warpAffine(photo, m, (width, height), borderValue=(40, 40, 40))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def run(path: Path, detect_size: int, mesh_mode: str, detect_every: int) -> dict[str, float]:
    from marlin.face import FaceDetector, FaceTracker, marlin_crop, wav2lip_crop
    from marlin.video import iter_frames

    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames(path))
    decode_s = time.perf_counter() - t0

    detector = FaceDetector("mediapipe", detect_size=detect_size, video=mesh_mode == "video")
    detector.detect(np.zeros((64, 64, 3), np.uint8))  # load the models outside the timing
    detector.landmarks(np.zeros((64, 64, 3), np.uint8), (8, 8, 56, 56))
    found = 0
    t0 = time.perf_counter()
    with detector, FaceTracker(detector=detector, detect_every=detect_every) as tracker:
        held = []
        for frame in iter_frames(path):
            held.append(frame.image)
            for tr in tracker.push(frame.image) + ([] if frame.index < n - 1 else tracker.flush()):
                image = held.pop(0)
                if tr.found:
                    found += 1
                    marlin_crop(image, tr.box, 224)
                    wav2lip_crop(image, tr.box, size=96)
    total_s = time.perf_counter() - t0
    return {"frames": n, "found": found, "decode_fps": n / decode_s, "pipeline_fps": n / total_s,
            "ms_per_frame": 1000 * total_s / n}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.face", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--heights", type=int, nargs="+", default=[720, 1080], help="frame heights to test (16:9)")
    p.add_argument("--frames", type=int, default=100, help="frames per clip")
    p.add_argument("--detect-size", type=int, default=640, help="longer side the detector sees (0: full)")
    p.add_argument("--mesh-mode", choices=["video", "static", "both"], default="both",
                   help="mediapipe face mesh tracking mode (video) or per-frame mode (static)")
    p.add_argument("--detect-every", type=int, nargs="+", default=[1, 5],
                   help="run the detector every N frames (the mesh follows the face in between)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 2 or any(h < 64 for h in args.heights) or any(k < 1 for k in args.detect_every):
        parser.error("need --frames >= 2, heights >= 64 and --detect-every >= 1")
    modes = ["video", "static"] if args.mesh_mode == "both" else [args.mesh_mode]
    print(f"{'input':>6} {'mesh':>7} {'detect':>7} {'frames':>6} {'found':>6} {'decode fps':>11} "
          f"{'pipeline fps':>13} {'ms/frame':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for height in args.heights:
            clip = face_clip(Path(tmp) / f"face_{height}p.mp4", height, args.frames)
            for mode in modes:
                for every in args.detect_every:
                    r = run(clip, args.detect_size, mode, every)
                    print(f"{str(height) + 'p':>6} {mode:>7} {'1/' + str(every):>7} {r['frames']:>6} "
                          f"{r['found']:>6} {r['decode_fps']:>11.1f} {r['pipeline_fps']:>13.1f} "
                          f"{r['ms_per_frame']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
