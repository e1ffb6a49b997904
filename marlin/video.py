"""Streaming video reading over PyAV: probe, frames with timestamps, rotation, CFR resampling.

Frames are decoded one at a time, so memory stays constant for any video length.
Still images (``IMAGE_SUFFIXES``) read as a one-frame video at ``IMAGE_FPS``.

Conventions
-----------
- Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``, already rotated for display.
- ``rotation`` is the counter-clockwise angle in degrees (0, 90, 180 or 270) by which the
  stored frames must be turned to display upright; it comes from the display-matrix side data
  (what phones write) or, for older files, from the ``rotate`` stream tag (clockwise, converted).
- Times are in seconds from the first video frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "IMAGE_FPS",
    "IMAGE_SUFFIXES",
    "Frame",
    "VideoError",
    "VideoInfo",
    "YuvPlanes",
    "decode_rgb",
    "iter_frames",
    "probe",
    "read_frames",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IMAGE_FPS = Fraction(25)  # a still image reads as one frame at this rate (Wav2Lip's --static)


class VideoError(ValueError):
    """A video (or image) could not be opened or decoded; the message names the path and reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video.

    Attributes
    ----------
    path : str
    fps : Fraction
        Average frame rate of the video stream (``IMAGE_FPS`` for a still image).
    width, height : int
        Display size in pixels, after rotation.
    duration : float
        Seconds covered by the video stream (first frame to end of last frame).
    n_frames : int
        Number of frames stored in the stream (counted by demuxing when the container does not say).
    rotation : int
        Counter-clockwise degrees (0, 90, 180, 270) applied to the stored frames for display.
    has_audio : bool
    is_image : bool
    """

    path: str
    fps: Fraction
    width: int
    height: int
    duration: float
    n_frames: int
    rotation: int
    has_audio: bool
    is_image: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` after rotation."""
        return self.width, self.height


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` (0-based, output order), ``time`` (s), ``image`` (H, W, 3) uint8 RGB;
    ``planes``: the frame as stored (see :class:`YuvPlanes`) when asked for and kept, else None."""

    index: int
    time: float
    image: np.ndarray
    planes: YuvPlanes | None = None


# Luma weights (Kr, Kb) of the colour matrices whose stored planes are kept: ITU-R BT.601 (what
# untagged video and SD tags mean, and swscale's default) and BT.709 (HD).
YUV_MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
# AVColorSpace values: unspecified, BT.470BG, SMPTE 170M (all BT.601), BT.709
_MATRIX_OF_TAG = {2: "bt601", 5: "bt601", 6: "bt601", 1: "bt709"}


@dataclass(frozen=True)
class YuvPlanes:
    """A decoded frame exactly as the video stores it: 8-bit 4:2:0, limited range.

    Converting to RGB and back is not lossless: the colour planes are at half resolution, and
    the round trip resamples them twice and rounds again (about 1.3 levels of mean error over a
    whole frame for a synthetic clip, before any new compression).  A writer that is given these
    planes can pass the pixels it did not change through untouched, and store only what it
    changed (``lipsync.inference.writer``).

    Attributes
    ----------
    data : (H * 3 // 2, W) uint8, PyAV's ``yuv420p`` layout: the H x W samples of Y, then the
        (H // 2) x (W // 2) of U and of V, one after the other in row order (``y``, ``u``, ``v``
        give each plane as a view)
    matrix : "bt601" or "bt709": the matrix ``image`` was decoded with (``YUV_MATRICES``)
    colorspace, color_primaries, color_trc : the stream's tags (FFmpeg's enum values), for a
        writer to copy so that players decode its output as they decoded the input
    """

    data: np.ndarray
    matrix: str
    colorspace: int
    color_primaries: int
    color_trc: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        return self.data.shape[1], self.data.shape[0] * 2 // 3

    def _plane(self, k: int) -> np.ndarray:
        w, h = self.size
        flat = self.data.reshape(-1)
        start = 0 if k == 0 else h * w + (k - 1) * (h // 2) * (w // 2)
        shape = (h, w) if k == 0 else (h // 2, w // 2)
        return flat[start:start + shape[0] * shape[1]].reshape(shape)

    @property
    def y(self) -> np.ndarray:
        return self._plane(0)

    @property
    def u(self) -> np.ndarray:
        return self._plane(1)

    @property
    def v(self) -> np.ndarray:
        return self._plane(2)

    def rotated(self, rotation: int) -> YuvPlanes:
        """The planes turned counter-clockwise by ``rotation`` degrees (a multiple of 90), as the
        picture is for display: each plane turns alone, so the samples stay exactly as stored."""
        k = rotation // 90 % 4
        if k == 0:
            return self
        y, u, v = (np.rot90(p, k) for p in (self.y, self.u, self.v))
        data = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, y.shape[1])
        return replace(self, data=data)


def decode_rgb(frame: av.VideoFrame, keep_planes: bool = False,
               rotation: int = 0) -> tuple[np.ndarray, YuvPlanes | None]:
    """``(rgb, planes)`` of a decoded frame, both turned by ``rotation`` (counter-clockwise degrees).

    ``planes`` is None unless asked for and the frame is 8-bit 4:2:0 with even sides, limited
    range, and a BT.601 or BT.709 matrix (or none named); then ``rgb`` is converted with that
    matrix named explicitly, so what the planes mean does not depend on the PyAV version."""
    planes = None
    if keep_planes and frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0 \
            and int(frame.color_range) in (0, 1) and int(frame.colorspace) in _MATRIX_OF_TAG:
        matrix = _MATRIX_OF_TAG[int(frame.colorspace)]
        rgb = frame.to_ndarray(format="rgb24", src_colorspace="ITU709" if matrix == "bt709" else "ITU601",
                               src_color_range="MPEG")
        planes = YuvPlanes(frame.to_ndarray(format="yuv420p"), matrix, int(frame.colorspace),
                           int(frame.color_primaries), int(frame.color_trc)).rotated(rotation)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return _rotate(rgb, rotation), planes


# --------------------------------------------------------------------------- helpers
def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "no such file")
    if p.is_dir():
        raise VideoError(p, "is a directory, not a video file")
    return p


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def _read_image(p: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except (UnidentifiedImageError, OSError) as e:
        raise VideoError(p, f"not a readable image ({e})") from e


def _open(p: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(p, f"not a readable video ({e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(p, "has no video stream")
    return container


def _rotation(stream: av.video.stream.VideoStream, first: av.VideoFrame | None) -> int:
    """Counter-clockwise display rotation in {0, 90, 180, 270}."""
    tag = stream.metadata.get("rotate")
    if tag is not None:  # legacy tag: clockwise degrees
        try:
            return int(round(-float(tag))) % 360 // 90 * 90
        except ValueError:
            log.warning("ignoring unparsable rotate tag %r", tag)
    if first is not None:
        return int(round(first.rotation)) % 360 // 90 * 90
    return 0


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=rotation // 90))


def _first_frame(container: av.container.InputContainer, p: Path) -> av.VideoFrame | None:
    try:
        return next(container.decode(container.streams.video[0]), None)
    except av.FFmpegError as e:
        raise VideoError(p, f"cannot decode video ({e})") from e


def _parse_clock(text: str) -> Fraction | None:
    """'HH:MM:SS.fffffffff' (Matroska DURATION tag) -> seconds."""
    try:
        h, m, sec = text.strip().split(":")
        return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
    except ValueError:
        return None


def _stream_end(container: av.container.InputContainer, stream) -> Fraction | None:
    """Absolute time (s) at which the video stream ends, when the container says."""
    tb = Fraction(stream.time_base) if stream.time_base else None
    if stream.duration and tb:
        return (stream.start_time or 0) * tb + stream.duration * tb
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        dur = _parse_clock(tag)
        if dur is not None:
            return ((stream.start_time or 0) * tb if tb else 0) + dur
    if container.duration and len(container.streams) == 1:
        return Fraction(container.duration + (container.start_time or 0), av.time_base)
    return None


def _frame_time(frame: av.VideoFrame, i: int, fallback: Fraction) -> Fraction:
    if frame.pts is not None and frame.time_base:
        return frame.pts * Fraction(frame.time_base)
    return i * fallback


# --------------------------------------------------------------------------- public
def probe(path: str | Path) -> VideoInfo:
    """Describe a video or still image without decoding it all.

    Only the first frame is decoded (for rotation and size); when the container does not
    store the frame count (Matroska/WebM, some AVI) the packets are counted without decoding.

    Raises
    ------
    VideoError
        Missing path, a directory, not a video/image, or no video stream.
    """
    p = _check_path(path)
    if _is_image(p):
        h, w = _read_image(p).shape[:2]
        return VideoInfo(str(p), IMAGE_FPS, w, h, float(1 / IMAGE_FPS), 1, 0, False, True)
    with _open(p) as container:
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        first = _first_frame(container, p)
        if first is None:
            raise VideoError(p, "video stream holds no frames")
        rotation = _rotation(stream, first)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, av.time_base)
        rate = stream.average_rate or stream.guessed_rate
        t_first = _frame_time(first, 0, 1 / Fraction(rate or IMAGE_FPS))
        n_frames = stream.frames
        end = _stream_end(container, stream)
        if not n_frames or end is None:  # count packets (no decoding)
            container.seek(0)
            n, last = 0, None
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                n += 1
                if packet.pts is not None:
                    stop = (packet.pts + (packet.duration or 0)) * tb
                    last = stop if last is None else max(last, stop)
            n_frames = n_frames or n
            end = end if end is not None else last
        duration = end - t_first if end is not None and end > t_first else None
        fps = Fraction(rate) if rate else None
        if fps is None:
            fps = (n_frames / duration).limit_denominator(1001) if duration else IMAGE_FPS
        if duration is None:
            duration = n_frames / fps
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(str(p), fps, w, h, float(duration), int(n_frames), rotation, has_audio)


def _native_frames(p: Path, keep_planes: bool = False
                   ) -> Iterator[tuple[Fraction, np.ndarray | None, YuvPlanes | None]]:
    """Decoded frames as ``(time, rgb, planes)`` with time relative to the first frame, then one
    final ``(end_time, None, None)``: when the last frame stops being shown.  ``planes`` only with
    ``keep_planes``, for the frames ``decode_rgb`` keeps them for."""
    with _open(p) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rotation = None
        t0 = t = None
        step = 1 / Fraction(stream.average_rate or stream.guessed_rate or IMAGE_FPS)
        try:
            for i, frame in enumerate(container.decode(stream)):
                if rotation is None:
                    rotation = _rotation(stream, frame)
                t = _frame_time(frame, i, step)
                t0 = t if t0 is None else t0
                yield (t - t0, *decode_rgb(frame, keep_planes, rotation))
        except av.FFmpegError as e:
            raise VideoError(p, f"decoding failed ({e})") from e
        if t is None:
            return
        end = _stream_end(container, stream)
        # frame durations are unreliable after B-frame reordering; the stream's end is not
        yield (end - t0 if end is not None and end > t else t + step - t0), None, None


def iter_frames(path: str | Path, fps: float | Fraction | None = None,
                keep_planes: bool = False) -> Iterator[Frame]:
    """Yield the frames of a video (or a still image) one at a time.

    Parameters
    ----------
    path : str or Path
        Video (mp4, mov, mkv, webm, avi, ... anything FFmpeg reads) or still image.
    fps : float or Fraction, optional
        Resample to this constant rate: output frame ``k`` at time ``k / fps`` is the input
        frame on display at that time (frames are repeated or dropped; works for variable
        frame rate input). ``None`` yields every stored frame with its own timestamp.
        A still image always yields exactly one frame.
    keep_planes : bool
        Also give each frame as stored (``Frame.planes``, see ``YuvPlanes``) where it can be kept.

    Yields
    ------
    Frame
        ``image`` is (H, W, 3) uint8 RGB with rotation applied; ``time`` in seconds.
    """
    p = _check_path(path)
    if _is_image(p):
        yield Frame(0, 0.0, _read_image(p))
        return
    if fps is None:
        i = 0
        for t, image, planes in _native_frames(p, keep_planes):
            if image is not None:
                yield Frame(i, float(t), image, planes)
                i += 1
        return
    rate = Fraction(fps).limit_denominator(1_000_000)
    if rate <= 0:
        raise VideoError(p, f"fps must be positive, got {fps!r}")
    step = 1 / rate
    eps = Fraction(1, 1_000_000)  # tolerate timestamp rounding in the container's time base
    k = 0
    shown: np.ndarray | None = None
    shown_planes: YuvPlanes | None = None
    for t, image, planes in _native_frames(p, keep_planes):
        # output times in [time of the shown frame, t) display the shown frame
        while shown is not None and k * step + eps < t:
            yield Frame(k, float(k * step), shown, shown_planes)
            k += 1
        shown, shown_planes = image, planes


def read_frames(path: str | Path, fps: float | Fraction | None = None,
                max_frames: int | None = None) -> np.ndarray:
    """All frames of a (short) video as one ``(T, H, W, 3)`` uint8 RGB array.

    Memory grows with length: prefer ``iter_frames`` for long videos.
    """
    frames = []
    for frame in iter_frames(path, fps=fps):
        if max_frames is not None and frame.index >= max_frames:
            break
        frames.append(frame.image)
    if not frames:
        raise VideoError(path, "no frames decoded")
    return np.stack(frames)
