"""Video files in, tracked faces out: the I/O edge of the face pipeline.

``track_video`` pairs every decoded frame with its ``Track`` while holding only the tracker's
lookahead of frames; ``iter_marlin_crops`` turns a video into MARLIN face crops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from ..video import Frame, iter_frames
from .crops import marlin_crop
from .detect import FaceDetector
from .track import FaceTracker, Track, TrackConfig

__all__ = ["iter_marlin_crops", "track_video"]


def track_video(path: str | Path, fps: float | Fraction | None = None, detector: FaceDetector | None = None,
                config: TrackConfig | None = None, **overrides) -> Iterator[tuple[Frame, Track]]:
    """Stream ``(Frame, Track)`` pairs for a video file with constant memory.

    Frames come from ``marlin.video.iter_frames(path, fps)``; only the few frames the tracker
    still needs are held.
    """
    held: deque = deque()
    with FaceTracker(config, detector, **overrides) as tracker:
        for frame in iter_frames(path, fps=fps):
            held.append(frame)
            for tr in tracker.push(frame.image):
                yield held.popleft(), tr
        for tr in tracker.flush():
            yield held.popleft(), tr


def iter_marlin_crops(path: str | Path, size: int = 224, fps: float | Fraction | None = None,
                      detector: FaceDetector | None = None, scale: float = 1.0,
                      **overrides) -> Iterator[Frame]:
    """Frames of a video with ``image`` replaced by the MARLIN crop of the tracked face.

    Crops are ``marlin_crop(image, box, size, scale)`` of the smoothed track; frames without a
    face reuse the last box, and frames before the first face use the centre square.

    Yields
    ------
    marlin.video.Frame
        ``image`` is (size, size, 3) uint8 RGB.
    """
    box = None
    for frame, tr in track_video(path, fps=fps, detector=detector, **overrides):
        if tr.found:
            box = tr.box
        if box is None:
            h, w = frame.image.shape[:2]
            side = min(h, w)
            centre = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            crop, _ = marlin_crop(frame.image, centre, size)
        else:
            crop, _ = marlin_crop(frame.image, box, size, scale)
        yield replace(frame, image=crop)
