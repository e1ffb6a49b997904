"""Preprocess talking-face videos for training: ``python -m lipsync.preprocess --input IN --output DATA``.

``IN`` is any folder of videos (searched recursively; this covers the LRS2 layout
``mvlrs_v1/main/<id>/<utt>.mp4``), a folder already in the public Wav2Lip layout
(``<videoID>/<utt>/<n>.jpg`` face crops + ``audio.wav``), a single video, or a file list (one
video or frame folder per line, relative to ``--root`` or the list's folder; a ``.mp4`` suffix
is tried when a line names neither, as in Wav2Lip's ``<videoID>/<utt>`` lists).

Each input becomes one or more clips in the ``marlin.data`` layout (``DATA/<clip_id>/``):
25 fps frames, face crops tracked and smoothed over time (the padded-box crop
``marlin.face.wav2lip_crop`` that ``lipsync.infer`` uses, resized to ``--size``), 478 landmarks
in crop pixels, source boxes, MARLIN region maps, 16 kHz mono audio cut to the frames, and
``meta.json``.  A clip is one run of consecutive frames with a face; runs shorter than
``--min-frames`` are dropped and runs longer than ``--max-frames`` are split.

- Parallel (``--workers``), each worker with its own face detector.
- Resumable: a source whose record in ``DATA/.preprocess/`` matches its size, modification time
  and the settings is skipped; every clip is written to a temporary folder and renamed.
- A final report (``DATA/preprocess_report.json`` and printed) names every skipped file and the
  reason: ``unreadable``, ``no audio``, ``no face`` or ``too short``.
- ``DATA/train.txt`` and ``DATA/val.txt``: a split by identity (the folder above each clip: the
  LRS2 / Wav2Lip video id, a speaker folder; ``manifest.json`` identities for synthetic data);
  with a single identity the clips themselves are split.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marlin.cli import HelpFormatter
from marlin.data import DataError, list_clips, write_clip
from marlin.training import atomic_write

from .data.sources import IMAGE_SUFFIXES, Source, SourceResult, find_sources, write_split

log = logging.getLogger(__name__)

__all__ = ["PreprocessConfig", "Source", "SourceResult", "REASONS", "find_sources", "process_source",
           "preprocess", "write_split", "main"]

FPS = 25
SAMPLES_PER_FRAME = 16000 // FPS
REASONS = ("unreadable", "no audio", "no face", "too short")
RECORDS = ".preprocess"


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings that decide what a clip contains (a change re-processes every source)."""

    size: int = 224  # side of the stored square crops (every model resizes to its own)
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # (top, bottom, left, right) pixels added to the box
    min_frames: int = 25  # shortest usable run of frames with a face
    max_frames: int = 1500  # longer runs are split into clips of at most this many frames
    backend: str = "mediapipe"  # face detector backend (marlin.face.available_backends())
    smooth_window: int = 5  # centred box smoothing window, frames
    regions: bool = True  # write MARLIN region maps (needs landmarks)


class _Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# --------------------------------------------------------------------------- per-source work
_DETECTOR = None


def _detector(backend: str):
    global _DETECTOR
    if _DETECTOR is None or _DETECTOR.backend != backend:
        from marlin.face import FaceDetector

        _DETECTOR = FaceDetector(backend)
    return _DETECTOR


def _clip_arrays(crops: list[np.ndarray], landmarks: list[np.ndarray | None], cfg: PreprocessConfig
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    from marlin.face import region_labels

    frames = np.stack(crops)
    if any(lm is None for lm in landmarks) or len({lm.shape for lm in landmarks}) != 1:
        return frames, None, None
    lms = np.stack(landmarks).astype(np.float32)
    regions = np.stack([region_labels(lm, frames.shape[1:3]) for lm in lms]) if cfg.regions else None
    return frames, lms, regions


class _RunWriter:
    """Collects consecutive frames with a face (and audio under them) and writes every run of at
    least ``min_frames`` as a clip as soon as it ends, so memory holds one run at most."""

    def __init__(self, src: Source, out: Path, cfg: PreprocessConfig, wav: np.ndarray, extra: dict[str, Any]):
        self.src, self.out, self.cfg, self.wav, self.extra = src, out, cfg, wav, extra
        self.usable = len(wav) // SAMPLES_PER_FRAME  # frames with audio under them
        self.start, self.items, self.written, self.longest = 0, [], [], 0

    def add(self, index: int, crop: np.ndarray, landmarks: np.ndarray | None, box: np.ndarray) -> None:
        if index >= self.usable:
            self.flush()
            return
        if self.items and self.start + len(self.items) != index:
            self.flush()
        if not self.items:
            self.start = index
        self.items.append((crop, landmarks, box))
        if len(self.items) == self.cfg.max_frames:
            self.flush()

    def flush(self) -> None:
        """End the current run (write it when long enough)."""
        n, lo = len(self.items), self.start
        self.longest = max(self.longest, n)
        if n >= self.cfg.min_frames:
            k = len(self.written)
            clip_id = self.src.clip_id if k == 0 else f"{self.src.clip_id}__{k}"
            crops, lms, boxes = zip(*self.items)
            frames, lms, regions = _clip_arrays(list(crops), list(lms), self.cfg)
            meta = {"fps": FPS, "source": str(self.src.path), "identity": self.src.identity,
                    "start_frame": lo, "crop": "wav2lip_crop", "pads": list(self.cfg.pads), **self.extra}
            write_clip(self.out, clip_id, frames, regions=regions, landmarks=lms, boxes=np.stack(boxes),
                       audio=self.wav[lo * SAMPLES_PER_FRAME:(lo + n) * SAMPLES_PER_FRAME], meta=meta)
            self.written.append(clip_id)
        self.items = []

    def finish(self) -> list[str]:
        self.flush()
        if not self.written:
            raise _Skip("too short", f"longest run of frames with a face and audio is {self.longest} frames "
                                     f"({self.longest / FPS:.2f} s), need {self.cfg.min_frames}")
        return self.written


def _load_wav(path: Path) -> np.ndarray:
    from audio import AudioError, load_audio

    try:
        wav = load_audio(path)
    except AudioError as e:
        raise _Skip("no audio", str(e)) from e
    if wav.size == 0 or not np.any(wav):
        raise _Skip("no audio", f"{path}: the audio track is empty or silent")
    return wav


def _process_video(src: Source, out: Path, cfg: PreprocessConfig) -> list[str]:
    from marlin.face import TrackConfig, track_video, wav2lip_crop
    from marlin.video import VideoError, probe

    try:
        info = probe(src.path)
    except VideoError as e:
        raise _Skip("unreadable", str(e)) from e
    if not info.has_audio:
        raise _Skip("no audio", f"{src.path}: the video has no audio stream")
    wav = _load_wav(src.path)
    writer = _RunWriter(src, out, cfg, wav, {"source_fps": str(info.fps), "width": info.width,
                                             "height": info.height})
    seen = faces = 0
    try:
        for frame, tr in track_video(src.path, fps=FPS, detector=_detector(cfg.backend),
                                     config=TrackConfig(box_window=cfg.smooth_window)):
            seen += 1
            crop = cmap = None
            if tr.found:
                try:
                    crop, cmap = wav2lip_crop(frame.image, tr.box, cfg.pads, cfg.size)
                except ValueError:  # the box left the frame
                    crop = None
            if crop is None:
                writer.flush()
                continue
            faces += 1
            lm = None if tr.landmarks is None else cmap.to_crop(tr.landmarks).astype(np.float32)
            writer.add(frame.index, crop, lm, np.asarray(tr.box, np.float32))
    except VideoError as e:
        raise _Skip("unreadable", str(e)) from e
    if not seen:
        raise _Skip("unreadable", f"{src.path}: no frames decoded")
    if not faces:
        raise _Skip("no face", f"{src.path}: no face found in {seen} frames")
    return writer.finish()


def _frame_number(path: Path) -> int | None:
    try:
        return int(path.stem)
    except ValueError:
        return None


def _process_frames(src: Source, out: Path, cfg: PreprocessConfig) -> list[str]:
    """A Wav2Lip-layout folder: numbered face crops at 25 fps (gaps: frames without a face)."""
    import cv2

    numbered = {n: p for p in src.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                and (n := _frame_number(p)) is not None and n >= 0}
    if not numbered:
        raise _Skip("unreadable", f"{src.path}: no numbered frame images")
    wav = _load_wav(src.path / "audio.wav")
    det = _detector(cfg.backend)
    writer = _RunWriter(src, out, cfg, wav, {"layout": "wav2lip"})
    read = 0
    for i in sorted(numbered):
        bgr = cv2.imread(str(numbered[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            writer.flush()
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if w > cfg.size else cv2.INTER_CUBIC
        lm = det.landmarks(rgb, (0.0, 0.0, float(w), float(h)))
        scale = np.float32([cfg.size / w, cfg.size / h])
        writer.add(i, cv2.resize(rgb, (cfg.size, cfg.size), interpolation=interp),
                   None if lm is None else (lm * scale).astype(np.float32), np.float32([0, 0, w, h]))
        read += 1
    if not read:
        raise _Skip("unreadable", f"{src.path}: no frame image could be read")
    return writer.finish()


def _stamp(src: Source, cfg: PreprocessConfig) -> dict[str, Any]:
    stat = src.path.stat()
    return {"source": str(src.path), "mtime_ns": stat.st_mtime_ns, "bytes": stat.st_size,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}


def _record_path(out: Path, src: Source) -> Path:
    return out / RECORDS / f"{src.clip_id}.json"


def process_source(src: Source, out: str | Path, cfg: PreprocessConfig) -> SourceResult:
    """Preprocess one source into ``out`` (skipped when an earlier run already did it).

    Never raises for a bad input file: the result carries the reason instead.
    """
    out = Path(out)
    stamp = _stamp(src, cfg)
    record = _record_path(out, src)
    if record.exists():
        try:
            old = json.loads(record.read_text())
            if old.get("stamp") == stamp and all((out / c / "meta.json").exists() for c in old["clips"]):
                return SourceResult(str(src.path), old["clips"], old.get("reason"), old.get("detail", ""),
                                    reused=True)
        except (ValueError, KeyError, TypeError):
            pass
    result = SourceResult(str(src.path))
    try:
        work = _process_video if src.kind == "video" else _process_frames
        result.clips = work(src, out, cfg)
    except _Skip as e:
        result.reason, result.detail = e.reason, e.detail
    except (ValueError, OSError, RuntimeError) as e:  # decoder / reader failures on a bad file
        result.reason, result.detail = "unreadable", f"{src.path}: {e}"
    body = {"stamp": stamp, "clips": result.clips, "reason": result.reason, "detail": result.detail}
    atomic_write(record, lambda f: f.write(json.dumps(body, indent=1).encode()))
    return result


def _work(job: tuple[Source, str, PreprocessConfig]) -> SourceResult:
    return process_source(*job)


def _iter_results(sources: list[Source], out: Path, cfg: PreprocessConfig, workers: int
                  ) -> Iterator[SourceResult]:
    jobs = [(s, str(out), cfg) for s in sources]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            yield from pool.map(_work, jobs)
    else:
        for job in jobs:
            yield _work(job)


def preprocess(input: str | Path, output: str | Path, config: PreprocessConfig | None = None, *,
               root: str | Path | None = None, workers: int = 1, val_fraction: float = 0.1,
               progress: bool = True) -> dict[str, Any]:
    """Preprocess every source of ``input`` into ``output``; returns the report (also written to
    ``output/preprocess_report.json``): ``clips`` (all clip ids now in ``output``), ``sources``,
    ``done`` (sources that gave clips), ``skipped`` (list of {source, reason, detail}),
    ``train`` / ``val`` clip counts.

    Raises :class:`DataError` when ``input`` holds no sources at all.
    """
    from tqdm.auto import tqdm

    cfg = config or PreprocessConfig()
    out = Path(output)
    sources, results = find_sources(input, root)
    ids = [s.clip_id for s in sources]
    if len(set(ids)) != len(ids):
        raise DataError(f"{input}: two sources map to the same clip id; rename one of them")
    out.mkdir(parents=True, exist_ok=True)
    results = list(results)
    with tqdm(total=len(sources), desc="preprocess", unit="file", disable=not progress) as bar:
        for res in _iter_results(sources, out, cfg, workers):
            results.append(res)
            bar.update()
    skipped = [{"source": r.source, "reason": r.reason, "detail": r.detail} for r in results if r.reason]
    clips = list_clips(out) if out.exists() else []
    train, val = write_split(out, val_fraction) if clips else ([], [])
    report = {"input": str(input), "output": str(out), "sources": len(results), "clips": clips,
              "done": [r.source for r in results if not r.reason], "skipped": skipped,
              "reused": sum(r.reused for r in results), "train": len(train), "val": len(val)}
    atomic_write(out / "preprocess_report.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    return report


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lipsync.preprocess", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    d = PreprocessConfig()
    p.add_argument("--input", type=Path, required=True,
                   help="folder of videos (LRS2 or Wav2Lip layouts too), one video, or a file list")
    p.add_argument("--output", type=Path, required=True, help="data folder to write clips into")
    p.add_argument("--root", type=Path, default=None, help="folder that file-list entries are relative to "
                                                         "(default: the list's folder)")
    p.add_argument("--size", type=int, default=d.size, help="side of the stored face crops, pixels")
    p.add_argument("--pads", type=int, nargs=4, default=list(d.pads),
                   metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="pixels added to the face box (as lipsync.infer --pads)")
    p.add_argument("--min-frames", type=int, default=d.min_frames,
                   help="shortest usable clip, frames at 25 fps")
    p.add_argument("--max-frames", type=int, default=d.max_frames, help="longer runs are split")
    p.add_argument("--backend", default=d.backend, help="face detector backend (mediapipe, fan, haar)")
    p.add_argument("--smooth-window", type=int, default=d.smooth_window,
                   help="box smoothing window, frames (odd)")
    p.add_argument("--regions", action=argparse.BooleanOptionalAction, default=d.regions,
                   help="write MARLIN region maps")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of identities for val.txt")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    checks = [(a.size >= 16, f"--size must be >= 16, got {a.size}"),
              (a.min_frames >= 1, f"--min-frames must be >= 1, got {a.min_frames}"),
              (a.max_frames >= a.min_frames, f"--max-frames must be >= --min-frames, got {a.max_frames}"),
              (a.smooth_window >= 1 and a.smooth_window % 2 == 1,
               "--smooth-window must be a positive odd number"),
              (0.0 <= a.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {a.val_fraction}"),
              (a.workers >= 1, f"--workers must be >= 1, got {a.workers}")]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    from marlin.face import available_backends

    if a.backend not in available_backends():
        parser.error(f"--backend {a.backend!r} is not one of {available_backends()}")
    cfg = PreprocessConfig(size=a.size, pads=tuple(a.pads), min_frames=a.min_frames, max_frames=a.max_frames,
                           backend=a.backend, smooth_window=a.smooth_window, regions=a.regions)
    try:
        report = preprocess(a.input, a.output, cfg, root=a.root, workers=a.workers,
                            val_fraction=a.val_fraction, progress=a.progress)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(report['done'])} of {report['sources']} inputs usable ({report['reused']} done earlier); "
          f"{len(report['clips'])} clips in {a.output} (train {report['train']}, val {report['val']})")
    for s in report["skipped"]:
        print(f"skipped {s['source']}: {s['reason']} ({s['detail']})")
    if not report["clips"]:
        print(f"error: none of the {report['sources']} inputs gave a usable clip", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
