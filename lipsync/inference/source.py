"""Input frames in constant memory, in any order the loop plan asks for.

The first pass reads the video forward once (``marlin.video.iter_frames`` at the video's own
average frame rate, so frame ``k`` is the picture on screen at ``k / fps``).  When the audio
outlasts the video, later passes replay frames forward, backward (ping-pong) or frozen; a
backward run is read in blocks of a few dozen frames by seeking to each block's start, so no
pass ever holds more than one block.

With ``keep_planes`` the source also keeps each frame as the video stores it
(``marlin.video.YuvPlanes``), so the writer can pass unchanged pixels through without a round
trip through RGB; ``planes_for(image)`` finds them for any image it yielded.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from marlin.video import VideoError, VideoInfo, YuvPlanes, decode_rgb, iter_frames, probe

from .plan import replay_runs

log = logging.getLogger(__name__)

_EPS = Fraction(1, 1_000_000)
BLOCK_BYTES = 256 * 2**20  # memory for one backward block


class FrameSource:
    """Frames of a video (or a still image repeated at ``image_fps``); with ``keep_planes``, also
    each frame as stored, found by ``planes_for``."""

    def __init__(self, path: str | Path, image_fps: float = 25.0, keep_planes: bool = False) -> None:
        self.path = Path(path)
        self.keep_planes = keep_planes
        # stored planes by the id of the RGB image yielded with them, dropped when that image is.
        # Found by identity so that the frames keep their (index, image) shape through tracking,
        # batching and replays, and nothing holds planes longer than the engine holds the image
        self._planes: dict[int, YuvPlanes] = {}
        self.info: VideoInfo = probe(self.path)
        self.is_image = self.info.is_image
        self.fps = Fraction(image_fps).limit_denominator(1001) if self.is_image else Fraction(self.info.fps)
        self.size = (self.info.width, self.info.height)
        self._image: np.ndarray | None = None
        self._t0: Fraction | None = None
        self.n_read = 0  # frames produced by the forward pass

    def planes_for(self, image: np.ndarray) -> YuvPlanes | None:
        """The stored planes of an image this source yielded (None when not kept)."""
        return self._planes.get(id(image))

    def _keep(self, image: np.ndarray, planes: YuvPlanes | None) -> None:
        key = id(image)
        if planes is not None and key not in self._planes:
            self._planes[key] = planes
            weakref.finalize(image, self._planes.pop, key, None)

    # -- first pass ---------------------------------------------------------------------
    def forward(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, rgb)`` for every frame once, in order (a still image yields one frame)."""
        for frame in iter_frames(self.path, fps=None if self.is_image else self.fps,
                                 keep_planes=self.keep_planes):
            if self.is_image:
                self._image = frame.image
            self.n_read = frame.index + 1
            self._keep(frame.image, frame.planes)
            yield frame.index, frame.image

    # -- replays ------------------------------------------------------------------------
    def block_size(self) -> int:
        """Frames per backward block: about BLOCK_BYTES of pixels, 16..128 frames."""
        w, h = self.size
        return int(min(128, max(16, BLOCK_BYTES // max(1, 3 * w * h))))

    def replay(self, n_src: int, n_out: int, mode: str) -> Iterator[tuple[int, np.ndarray]]:
        """``(source index, rgb)`` for output frames ``n_src .. n_out - 1`` following ``mode``."""
        for first, count, step in replay_runs(n_src, n_out, mode):
            if step == 0:
                image = self._image if self.is_image else next(self.iter_from(first))[1]
                for _ in range(count):
                    yield first, image
            elif step > 0:
                it = self.iter_from(first)
                for _ in range(count):
                    yield next(it)
            else:  # backward: blocks read forward, served in reverse
                hi = first + 1  # exclusive end of the remaining backward range
                lo_end = first - count + 1
                bs = self.block_size()
                while hi > lo_end:
                    lo = max(lo_end, hi - bs)
                    block = self.read_block(lo, hi)
                    for k in range(len(block) - 1, -1, -1):
                        yield lo + k, block[k]
                    hi = lo

    def read_block(self, start: int, stop: int) -> list[np.ndarray]:
        """Frames ``start .. stop - 1`` (as the forward pass numbered them)."""
        it = self.iter_from(start)
        out = [next(it)[1] for _ in range(stop - start)]
        it.close()
        return out

    def _first_time(self, container: av.container.InputContainer) -> Fraction:
        if self._t0 is None:
            stream = container.streams.video[0]
            first = next(container.decode(stream))
            self._t0 = first.pts * Fraction(first.time_base) if first.pts is not None else Fraction(0)
            container.seek(0)
        return self._t0

    def iter_from(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames from ``start`` on, by seeking near it (falls back to reading from the start)."""
        if self.is_image:
            while True:
                yield start, self._image
        if start == 0:
            yield from self.forward_plain()
            return
        try:
            yield from self._seek_frames(start)
        except _SeekFailed as e:
            log.info("seeking in %s failed (%s); reading from the start", self.path, e)
            for index, image in self.forward_plain():
                if index >= start:
                    yield index, image

    def forward_plain(self) -> Iterator[tuple[int, np.ndarray]]:
        for frame in iter_frames(self.path, fps=self.fps):
            yield frame.index, frame.image

    def _seek_frames(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        step = 1 / self.fps
        target = start * step
        rotation = self.info.rotation
        try:
            container = av.open(str(self.path))
        except av.FFmpegError as e:
            raise VideoError(self.path, f"cannot reopen for replay ({e})") from e
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = self._first_time(container)
            tb = Fraction(stream.time_base)
            container.seek(int(math.floor((t0 + target) / tb)), stream=stream, backward=True)
            k = start
            prev_t: Fraction | None = None
            prev: av.VideoFrame | None = None
            cache: tuple[av.VideoFrame, np.ndarray] | None = None
            last_dur: Fraction | None = None

            def picture(frame: av.VideoFrame) -> np.ndarray:
                nonlocal cache
                if cache is None or cache[0] is not frame:
                    img, planes = decode_rgb(frame, self.keep_planes, rotation)
                    self._keep(img, planes)
                    cache = (frame, img)
                return cache[1]

            for frame in container.decode(stream):
                if frame.pts is None:
                    raise _SeekFailed("frames without timestamps")
                t = frame.pts * Fraction(frame.time_base) - t0
                if prev is None and t > target + _EPS:
                    raise _SeekFailed(f"landed at {float(t):.3f} s after {float(target):.3f} s")
                if prev is not None:
                    while k * step + _EPS < t:
                        yield k, picture(prev)
                        k += 1
                prev, prev_t = frame, t
                last_dur = frame.duration * Fraction(frame.time_base) if frame.duration else None
            if prev is not None:
                end = prev_t + (last_dur or step)
                while k < math.ceil((end - _EPS) / step):
                    yield k, picture(prev)
                    k += 1


class _SeekFailed(Exception):
    pass
