"""Counterfactual references: each preprocessed synthetic clip's face crops, re-rendered speaking
another clip's speech.

    python -m lipsync.data.synthetic.counterfactual --data data/prep [--offset 7] [--workers 2]

For every clip of ``--data`` whose source video is a ``lipsync.data.synthetic`` clip (its sidecar
``.json`` beside it; ``--clips`` when the videos have moved), the same face (identity, head
motion, blinks, light: ``render_face``) is rendered with the mouth track of the ``--offset``-th
next source clip's speech and cropped with the clip's own stored boxes, so frame ``i`` of
``<clip>/counterfactual.npy`` shows exactly frame ``i`` of ``frames.npy`` with another mouth.

Why: at inference a generator is given the frames it dubs, whose mouth follows the original
speech, not the new audio.  Real data cannot show it that situation in training (every frame's
mouth follows its own audio), so Wav2Lip-style training gives a reference from another moment,
which a generator either copies (the dub follows the original speech) or must not see at all
(the mouth is drawn blind, blurred).  On synthetic faces it can be shown exactly: the target
frames with their own audio, and as the reference the same frames, same pose and light, with a
mouth unrelated to that audio (``lipsync.train --reference counterfactual``).  All the
generator has to change is the mouth; everything else it can copy sharp.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync.data.datasets import COUNTERFACTUAL

__all__ = ["COUNTERFACTUAL", "CounterfactualError", "fit_track", "render_counterfactual",
           "write_counterfactuals", "main"]

RECORD = "counterfactual.json"  #: which speech it shows


class CounterfactualError(ValueError):
    """A clip that cannot be re-rendered; the message names it and the reason."""


def fit_track(track: np.ndarray, n: int) -> np.ndarray:
    """``track`` (T, 4) stretched to ``n`` frames the way dubbing loops a short video
    (``lipsync.inference.plan.source_index``, "pingpong": forward, backward, forward... without
    repeating the turning frames), so no frame jumps back to the start."""
    from lipsync.inference.plan import source_index

    if len(track) == 0:
        raise CounterfactualError("the other clip's mouth track is empty")
    order = [source_index(i, len(track), "pingpong") for i in range(n)]
    return np.asarray(track[order], np.float32)


def _source_path(meta: dict, clips: Path | None) -> Path:
    source = Path(meta.get("source", ""))
    return clips / source.name if clips is not None else source


def render_counterfactual(clip_dir: Path, other: Path, clips: Path | None = None) -> np.ndarray:
    """The crops of preprocessed clip ``clip_dir`` re-rendered speaking synthetic clip ``other``'s
    speech: ``(T, S, S, 3)`` uint8, cropped like ``frames.npy`` (same boxes, pads and size)."""
    from marlin.face import wav2lip_crop

    from .clip import read_sidecar
    from .rerender import mouth_for_audio, render_face

    meta = json.loads((clip_dir / "meta.json").read_text())
    source = _source_path(meta, clips)
    try:
        spec, _ = read_sidecar(source)
    except ValueError as e:
        raise CounterfactualError(f"{clip_dir.name}: its source is not a synthetic clip ({e})") from e
    boxes = np.load(clip_dir / "boxes.npy")
    start, n = int(meta.get("start_frame", 0)), len(boxes)
    if float(meta.get("fps", spec.fps)) != float(spec.fps):
        raise CounterfactualError(f"{clip_dir.name}: preprocessed at {meta.get('fps')} fps, its source "
                                  f"has {spec.fps}")
    mouth, _ = mouth_for_audio(other, spec.fps, spec.identity.articulation)
    rendering = render_face(spec, fit_track(mouth, start + n))
    pads, size = tuple(meta.get("pads", (0, 10, 0, 0))), int(meta["size"])
    crops = [wav2lip_crop(rendering.frames[start + i], boxes[i], pads, size)[0] for i in range(n)]
    return np.stack(crops).astype(np.uint8)


@dataclass(frozen=True)
class _Job:
    clip_dir: Path
    other: Path
    clips: Path | None


def _run(job: _Job) -> str:
    from marlin.train_state import atomic_write

    frames = render_counterfactual(job.clip_dir, job.other, job.clips)
    expected = np.load(job.clip_dir / "frames.npy", mmap_mode="r").shape
    if frames.shape != expected:
        raise CounterfactualError(f"{job.clip_dir.name}: rendered {frames.shape}, frames.npy is {expected}")
    atomic_write(job.clip_dir / COUNTERFACTUAL, lambda f: np.save(f, frames))
    record = {"speech": job.other.name, "frames": int(frames.shape[0])}
    atomic_write(job.clip_dir / RECORD, lambda f: f.write(json.dumps(record).encode()))
    return job.clip_dir.name


def write_counterfactuals(data: str | Path, offset: int = 7, clips: str | Path | None = None,
                          workers: int = 1, progress: bool = True) -> list[str]:
    """Write ``counterfactual.npy`` into every clip of ``data`` (see the module docstring).

    The speech of clip ``k`` comes from the source clip ``offset`` places after its own in the
    sorted list of distinct source videos, so a clip never gets its own speech.  Returns the clip
    ids written.  Raises :class:`CounterfactualError` for a clip whose source is not synthetic.
    """
    from marlin.data import list_clips

    data = Path(data)
    clips = None if clips is None else Path(clips)
    ids = list_clips(data)
    if not ids:
        raise CounterfactualError(f"{data}: no preprocessed clips")
    sources = {cid: _source_path(json.loads((data / cid / "meta.json").read_text()), clips) for cid in ids}
    videos = sorted(set(sources.values()))
    if len(videos) < 2:
        raise CounterfactualError(f"{data}: needs clips from at least two source videos (another "
                                  "clip's speech for each)")
    if offset % len(videos) == 0:
        raise CounterfactualError(f"--offset {offset} gives each of the {len(videos)} videos its own speech")
    position = {v: k for k, v in enumerate(videos)}
    jobs = [_Job(data / cid, videos[(position[sources[cid]] + offset) % len(videos)], clips) for cid in ids]
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="clip", desc="counterfactual", disable=not progress)
    done = []
    try:
        if workers <= 1:
            for job in jobs:
                done.append(_run(job))
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for name in pool.map(_run, jobs):
                    done.append(name)
                    bar.update()
    finally:
        bar.close()
    return done


def build_parser() -> argparse.ArgumentParser:
    from lipsync.training.common import OneLineParser
    from marlin.cli import HelpFormatter

    p = OneLineParser(prog="python -m lipsync.data.synthetic.counterfactual",
                      description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="preprocessed folder (lipsync.preprocess output) of synthetic clips")
    p.add_argument("--clips", type=Path, default=None,
                   help="folder of the synthetic source clips (default: the paths in each meta.json)")
    p.add_argument("--offset", type=int, default=7,
                   help="each clip speaks the speech of the offset-th next source clip")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from marlin.data import DataError

    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        done = write_counterfactuals(args.data, args.offset, args.clips, args.workers, not args.quiet)
    except (CounterfactualError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {COUNTERFACTUAL} for {len(done)} clips in {args.data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
