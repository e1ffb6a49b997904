"""Streaming mp4 writer: h264 video plus the new audio track as aac, written atomically.

The file is written under a hidden temporary name in the target's folder and renamed over
the target only by :meth:`DubWriter.close`; :meth:`DubWriter.abort` (or leaving the ``with``
block through an exception) removes it, so a failed run never leaves a partial output.

Audio is decoded from its source file at its own sample rate (not the 16 kHz used for the
model's features) and interleaved with the video as the frames arrive, so neither the
decoded audio nor the muxer's interleaving queue grows with the video's length.

x264 keeps its own thread count by default. One x264 thread saves 5-10% of its CPU time, but on
a 2-core CPU encoding then becomes the engine's slowest stage (720p, Wav2Lip-size generator:
9.6 instead of 16.4 fps).

Frames the source kept as stored (``marlin.video.YuvPlanes``) are written from those planes:
pixels the dub did not change go to the encoder exactly as the input stored them, and only the
change is converted from RGB (:func:`apply_rgb_change`), so the frame outside the face, and the
face where the dub left it as it was, lose nothing but the new encode. Through RGB, every pixel
of the frame would pay a round trip of the half-resolution colour planes (1.3 levels of mean
error over a synthetic clip's frames even when encoded losslessly, 1.6 instead of 1.1 at the
default ``crf`` 18). The output then carries the input's colour tags, so players decode it as
they decoded the input.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from marlin.video import YUV_MATRICES, YuvPlanes

from .options import DubError

log = logging.getLogger(__name__)

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def _audio_chunks(path: str, rate: int, layout: str) -> Iterator[np.ndarray]:
    """Decode the first audio stream of ``path`` as float32 planar chunks (channels, n) at ``rate``."""
    with av.open(str(path)) as container:
        stream = container.streams.best("audio")
        if stream is None:
            raise DubError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        for frame in container.decode(stream):
            frame.pts = None
            for out in resampler.resample(frame):
                yield out.to_ndarray().astype(np.float32, copy=False)
        for out in resampler.resample(None):
            yield out.to_ndarray().astype(np.float32, copy=False)


def apply_rgb_change(planes: YuvPlanes, before: np.ndarray, after: np.ndarray,
                     region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The stored planes of ``after``: ``planes`` plus the change from ``before`` to ``after``.

    ``before`` is the RGB image decoded from ``planes`` and ``after`` the same image changed
    (both (H, W, 3) uint8); ``region`` (x0, y0, x1, y1), when given, bounds where they may differ.
    The change is taken into Y'CbCr with the planes' matrix (limited range; the colour change
    averaged over each 2 x 2 block) and added, so every sample whose pixels did not change is
    returned exactly as stored.  A new (H * 3 // 2, W) uint8 array; ``planes`` is not modified.
    """
    h, w = before.shape[:2]
    x0, y0, x1, y1 = region if region is not None else (0, 0, w, h)
    x0, y0 = max(0, x0) // 2 * 2, max(0, y0) // 2 * 2  # whole 2 x 2 colour blocks
    x1, y1 = min(w, x1 + x1 % 2), min(h, y1 + y1 % 2)
    out = planes.data.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    kr, kb = YUV_MATRICES[planes.matrix]
    luma = np.array([kr, 1.0 - kr - kb, kb], np.float32)
    d = after[y0:y1, x0:x1].astype(np.float32) - before[y0:y1, x0:x1]
    y = out[y0:y1, x0:x1]
    y[...] = np.clip(np.rint(y + d @ luma * (219 / 255)), 0, 255)
    m = d.reshape((y1 - y0) // 2, 2, (x1 - x0) // 2, 2, 3).mean(axis=(1, 3))
    e = m @ luma
    stored = dataclasses.replace(planes, data=out)
    cb = stored.u[y0 // 2:y1 // 2, x0 // 2:x1 // 2]  # views into out
    cr = stored.v[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
    cb[...] = np.clip(np.rint(cb + (m[..., 2] - e) * (224 / 255 / (2 * (1 - kb)))), 0, 255)
    cr[...] = np.clip(np.rint(cr + (m[..., 0] - e) * (224 / 255 / (2 * (1 - kr)))), 0, 255)
    return out


def audio_format(path: str) -> tuple[int, str]:
    """(sample rate, layout) to encode ``path``'s audio with: its own rate when aac supports it
    (else 48 kHz), mono stays mono, anything wider becomes stereo."""
    with av.open(str(path)) as container:
        stream = container.streams.best("audio")
        if stream is None:
            raise DubError(f"{path}: no audio stream")
        rate = stream.codec_context.sample_rate or 48000
        channels = stream.codec_context.channels or 1
    return (rate if rate in AAC_RATES else 48000), ("mono" if channels == 1 else "stereo")


class DubWriter:
    """Write RGB frames and the audio of ``audio_path`` to ``out`` (mp4, h264 + aac).

    Parameters
    ----------
    out : target path (its folder must exist and be writable)
    size : (width, height) of every frame
    fps : output frame rate
    audio_path : file whose first audio stream becomes the output's audio
    audio_seconds : how much of that audio to keep
    crf, preset : x264 constant rate factor (0 lossless .. 51) and speed preset
    pad_audio_to_video : when the video ends up longer than the audio (``--keep-video``), fill
        the rest of the audio track with silence
    threads : x264 threads (0: x264's default, 1.5 per core, which the engine uses)
    """

    def __init__(self, out: str | os.PathLike, size: tuple[int, int], fps: Fraction, audio_path: str,
                 audio_seconds: float, crf: int = 18, preset: str = "veryfast",
                 pad_audio_to_video: bool = False, threads: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.out = Path(out)
        self.fps = Fraction(fps)
        width, height = size
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.stem}.", suffix=".partial.mp4", dir=self.out.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames = 0
        self._closed = False
        self._size = (width, height)
        self._matrix: str | None = None  # set by the first frame: the stored planes' matrix, if any
        try:
            self.container = av.open(str(self.tmp), "w", format="mp4")
            self.video = self.container.add_stream("libx264", rate=self.fps)
            self.video.width, self.video.height = width, height
            # yuv420p needs even sizes; odd sizes keep the exact resolution with 4:4:4 chroma.
            self.video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            self.video.codec_context.thread_count = int(threads)
            self.video.codec_context.time_base = Fraction(1, 1) / self.fps
            self.video.options = {"crf": str(int(crf)), "preset": preset}
            rate, layout = audio_format(audio_path)
            self.audio = self.container.add_stream("aac", rate=rate)
            self.audio.layout = layout
            self.audio.codec_context.time_base = Fraction(1, rate)
            self._rate, self._layout = rate, layout
            self._audio_total = round(audio_seconds * rate)
            self._pad = pad_audio_to_video
            self._audio_written = 0
            self._chunks = _audio_chunks(audio_path, rate, layout)
        except Exception:
            self.abort()
            raise

    # -- audio ---------------------------------------------------------------------------
    def _encode_audio(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp",
                                           layout=self._layout)
        frame.sample_rate = self._rate
        frame.pts = self._audio_written
        frame.time_base = Fraction(1, self._rate)
        self._audio_written += samples.shape[1]
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def _feed_audio(self, until_seconds: float | None) -> None:
        """Encode audio up to ``until_seconds`` (None: to the end, then silence to the padded end)."""
        goal = self._audio_total if until_seconds is None else min(self._audio_total,
                                                                    round(until_seconds * self._rate))
        while self._chunks is not None and self._audio_written < goal:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._chunks = None
                break
            self._encode_audio(chunk[:, : self._audio_total - self._audio_written])
        if until_seconds is None and self._pad:
            channels = 1 if self._layout == "mono" else 2
            total = round(self.frames / self.fps * self._rate)
            while self._audio_written < total:
                n = min(self._rate, total - self._audio_written)
                self._encode_audio(np.zeros((channels, n), np.float32))

    # -- video ---------------------------------------------------------------------------
    def write(self, rgb: np.ndarray, base: np.ndarray | None = None, planes: YuvPlanes | None = None,
              region: tuple[int, int, int, int] | None = None) -> None:
        """Append one RGB uint8 (H, W, 3) frame.

        ``planes``: the input frame as stored, when the source kept it; ``base``: the RGB image
        decoded from those planes that ``rgb`` was made from (None: ``rgb`` is that image,
        unchanged); ``region`` bounds where ``rgb`` differs from ``base``.  With planes, unchanged
        pixels are written as stored (the module's docstring)."""
        if self.frames == 0:
            self._choose_colour(planes)
        frame = self._frame(rgb, base, planes, region)
        frame.pts = self.frames
        frame.time_base = self.video.codec_context.time_base
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames += 1
        self._feed_audio(self.frames / self.fps + 0.5)

    def _choose_colour(self, planes: YuvPlanes | None) -> None:
        """Before the first frame: the input's colour tags when it comes with stored planes, else
        BT.601 limited range, what the conversion from RGB uses, named in the stream."""
        cc = self.video.codec_context
        if planes is not None and self.video.pix_fmt == "yuv420p" and planes.size == self._size:
            self._matrix = planes.matrix
            cc.colorspace, cc.color_primaries, cc.color_trc = \
                planes.colorspace, planes.color_primaries, planes.color_trc
        else:
            cc.colorspace = 6  # AVCOL_SPC_SMPTE170M: BT.601, swscale's default conversion
        cc.color_range = 1  # AVCOL_RANGE_MPEG: limited

    def _frame(self, rgb: np.ndarray, base: np.ndarray | None, planes: YuvPlanes | None,
               region: tuple[int, int, int, int] | None) -> av.VideoFrame:
        if self._matrix is not None and planes is not None and planes.matrix == self._matrix \
                and planes.size == self._size:
            data = planes.data if base is None or base is rgb else apply_rgb_change(planes, base, rgb, region)
            return av.VideoFrame.from_ndarray(data, format="yuv420p")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self._matrix == "bt709":  # a frame without planes in a stream tagged BT.709
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        return frame

    def close(self) -> Path:
        """Flush both encoders, finish the file and rename it over the target."""
        try:
            for packet in self.video.encode(None):
                self.container.mux(packet)
            self._feed_audio(None)
            for packet in self.audio.encode(None):
                self.container.mux(packet)
            self.container.close()
            self._closed = True
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp made it private; give it a normal file's mode
            os.replace(self.tmp, self.out)
        except Exception:
            self.abort()
            raise
        return self.out

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._closed:
            self._closed = True
            container = getattr(self, "container", None)
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001 - the file is being discarded anyway
                    log.debug("closing an aborted output failed", exc_info=True)
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> DubWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
