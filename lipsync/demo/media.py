"""Media the demo writes besides the dub: the scaled-down input, the before/after video, and
short silent mp4s (the MARLIN tab's).

Frames are RGB ``uint8`` arrays of shape (H, W, 3); reading goes through
:mod:`marlin.video` and :class:`lipsync.inference.source.FrameSource`, writing with sound
through :class:`lipsync.inference.writer.DubWriter`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from .config import DemoError

SIDE_BY_SIDE_HEIGHT = 360  # each half of the before/after video is at most this tall


def even_size(width: float, height: float, max_height: int | None) -> tuple[int, int]:
    """(w, h) scaled to at most ``max_height`` tall, keeping the aspect ratio, both even."""
    scale = min(1.0, max_height / height) if max_height else 1.0
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def resize_image(image: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """``image`` at ``size`` = (w, h): area-averaged (or nearest-neighbour); unchanged when it fits."""
    import cv2

    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the bottom-left corner, in place (players cover the top corners with buttons)."""
    import cv2

    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (6, image.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, width,
                    cv2.LINE_AA)
    return image


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float | Fraction) -> Path:
    """Write RGB uint8 frames (all one even size) as h264 mp4, atomically; returns ``path``."""
    import av

    tmp = path.with_name(f".{path.stem}.partial.mp4")
    try:
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = None
            for image in frames:
                if stream is None:
                    stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = image.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "20", "preset": "veryfast"}
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            if stream is None:
                raise DemoError(f"{path.name}: no frames to write")
            for packet in stream.encode(None):
                out.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def scale_input(path: Path, max_height: int, work: Path) -> Path:
    """The video or photo scaled down to ``max_height`` (unchanged when it is not taller)."""
    from marlin.video import iter_frames, probe

    info = probe(path)
    if info.height <= max_height:
        return path
    size = even_size(info.width, info.height, max_height)
    frames = (resize_image(f.image, size) for f in iter_frames(path, fps=None if info.is_image else info.fps))
    if info.is_image:
        from PIL import Image

        out = work / "input.png"
        Image.fromarray(next(frames)).save(out)
        return out
    return write_mp4(frames, work / "input.mp4", info.fps)


def before_frames(source, n: int, loop: str) -> Iterator[np.ndarray]:
    """The ``n`` input frames of a ``FrameSource`` the dubbed frames were made from (looped as
    the dub was: a photo is held, a video replayed with ``loop``)."""
    count = 0
    forward = source.forward()
    try:
        for _, image in forward:
            if count >= n:
                break
            yield image
            count += 1
    finally:
        forward.close()
    if 0 < count < n:
        for _, image in source.replay(count, n, "freeze" if source.is_image else loop):
            yield image


def side_by_side(source: Path, dubbed: Path, out: Path, loop: str, image_fps: float) -> Path:
    """Input (left) and dubbed output (right), at most SIDE_BY_SIDE_HEIGHT tall, with the dub's audio."""
    from marlin.video import iter_frames, probe

    from ..inference.source import FrameSource
    from ..inference.writer import DubWriter

    src = FrameSource(source, image_fps=image_fps)
    info = probe(dubbed)
    w, h = even_size(*src.size, SIDE_BY_SIDE_HEIGHT)
    writer = DubWriter(out, (2 * w, h), src.fps, str(dubbed), info.duration, crf=23, preset="veryfast",
                       pad_audio_to_video=True)
    with writer:
        pairs = zip(before_frames(src, info.n_frames, loop), iter_frames(dubbed, fps=src.fps))
        for before, after in pairs:
            halves = [label_image(resize_image(image, (w, h)).copy(), text)
                      for image, text in ((before, "before"), (after.image, "after"))]
            writer.write(np.concatenate(halves, axis=1))
        writer.close()
    return out
