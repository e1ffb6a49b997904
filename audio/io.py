"""Decode the audio track of any media file to a mono float32 waveform (PyAV, streaming).

``load_audio`` is the package's only I/O function.  It reads any container FFmpeg
knows (wav, flac, mp3, m4a/aac, ogg/opus, and the audio stream of mp4/mov/mkv/webm
videos, whichever stream index it has), averages the channels to mono and resamples
with FFmpeg's resampler, one decoded frame at a time.  Memory stays at the result
plus a small buffer (one 32 MiB chunk) whatever the file's length, and whether or
not the container declares its duration: samples are gathered in fixed-size chunks
that are joined into the result at the end, each chunk freed as soon as it is copied.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from .constants import SAMPLE_RATE
from .errors import AudioError

__all__ = ["load_audio"]

log = logging.getLogger(__name__)

# Samples per buffer chunk: 2**23 float32 = 32 MiB, the largest block glibc's malloc ever serves
# from its heap; blocks this size are mmapped, so a freed chunk goes straight back to the OS.
_CHUNK_SAMPLES = 1 << 23


class _ChunkedBuffer:
    """Float32 samples collected in fixed-size chunks, joined once at the end.

    Unlike a growing array, no step ever holds two copies of the audio: ``finish``
    fills the result (whose pages are committed only as they are written) while
    freeing the chunks one by one, so memory peaks at the result plus one chunk.
    ``np.empty`` chunks are committed only as they fill, so short files cost little.
    """

    def __init__(self, chunk_samples: int = _CHUNK_SAMPLES) -> None:
        self.chunk_samples = max(int(chunk_samples), 1)
        self.chunks: list[np.ndarray] = []
        self.fill = 0  # samples used in the last chunk
        self.size = 0

    def append(self, samples: np.ndarray) -> None:
        while len(samples):
            if not self.chunks or self.fill == self.chunk_samples:
                self.chunks.append(np.empty(self.chunk_samples, np.float32))
                self.fill = 0
            k = min(len(samples), self.chunk_samples - self.fill)
            self.chunks[-1][self.fill:self.fill + k] = samples[:k]
            self.fill += k
            self.size += k
            samples = samples[k:]

    def finish(self) -> np.ndarray:
        out = np.empty(self.size, np.float32)
        pos = 0
        while self.chunks:
            chunk = self.chunks.pop(0)
            k = min(len(chunk), self.size - pos)
            out[pos:pos + k] = chunk[:k]
            pos += k
            del chunk  # the last reference: its memory is released before the next copy
        return out


def _resampled(items: Iterator[av.AudioFrame | float], sr: int) -> Iterator[np.ndarray]:
    """Resample decoded frames to float planar at ``sr`` (channels kept) and average them to mono.

    A float item is a gap (seconds of undecodable audio): it becomes that much silence.
    """
    resampler = None
    for item in items:
        if isinstance(item, float):
            yield np.zeros(int(round(item * sr)), np.float32)
            continue
        if resampler is not None:
            try:
                out = resampler.resample(item)
            except ValueError:  # sample rate / layout changed mid-stream: flush, start a new resampler
                yield from (_mono(f) for f in resampler.resample(None))
                resampler = None
        if resampler is None:
            resampler = av.AudioResampler(format="fltp", rate=sr)
            out = resampler.resample(item)
        yield from (_mono(f) for f in out)
    if resampler is not None:
        yield from (_mono(f) for f in resampler.resample(None))


def _mono(frame: av.AudioFrame) -> np.ndarray:
    planes = frame.to_ndarray()  # (channels, samples) float32 for planar "fltp"
    return planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)


def _decoded(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
             path: str, errors: list[str]) -> Iterator[av.AudioFrame | float]:
    """Decoded frames of ``stream``.

    A packet that fails to decode is recorded in ``errors`` and yields its duration in
    seconds instead (when known), so the audio after it keeps its timing.
    """
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError as e:
            errors.append(f"{e} (at packet pts {packet.pts})")
            log.debug("%s: undecodable packet replaced by silence: %s", path, e)
            if packet.duration and packet.time_base is not None:
                yield float(packet.duration * packet.time_base)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the audio track of a media file to a mono waveform.

    Parameters
    ----------
    path : str or PathLike
        Any file FFmpeg can demux: audio files (wav, flac, mp3, m4a/aac, ogg/opus, ...)
        or videos (mp4, mov, mkv, webm, ...).  The best audio stream is used wherever it
        sits among the streams.
    sr : int
        Output sample rate in Hz (default 16000, what every model here consumes).

    Returns
    -------
    np.ndarray
        (N,) float32 mono waveform at ``sr``, nominally in [-1, 1] (decoders of lossy
        codecs may overshoot slightly; nothing is clipped).  Channels are averaged with
        equal weight (like ``librosa.to_mono``); resampling is FFmpeg's (libswresample).

    Raises
    ------
    AudioError
        The path does not exist or is a directory, the file is not a readable media file
        (text, corrupt bytes), it has no audio stream, or it holds no audio samples.  The
        message names the path and the reason.  Packets that fail to decode in an
        otherwise readable file become silence of the same duration (so later audio
        stays in time with the video) and a ``RuntimeWarning`` says how many.
    """
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer) or sr <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sr!r}")
    sr = int(sr)
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not a media file")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AudioError(f"{p}: not a readable audio or video file ({reason})") from e
    except OSError as e:  # permissions and the like
        raise AudioError(f"{p}: cannot open ({e.strerror or e})") from e

    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise AudioError(f"{p}: has no audio stream (streams: {kinds})")
        stream = container.streams.best("audio") or container.streams.audio[0]
        stream.thread_type = "AUTO"
        buffer = _ChunkedBuffer(_CHUNK_SAMPLES)
        errors: list[str] = []
        try:
            for chunk in _resampled(_decoded(container, stream, str(p), errors), sr):
                buffer.append(chunk)
        except av.error.FFmpegError as e:
            raise AudioError(f"{p}: audio stream could not be decoded ({e})") from e
    if buffer.size == 0:
        detail = f"; decoding failed: {errors[0]}" if errors else ""
        raise AudioError(f"{p}: contains no audio samples (zero-length audio stream){detail}")
    if errors:
        warnings.warn(f"{p}: {len(errors)} undecodable audio packet(s) replaced by silence, "
                      f"first: {errors[0]}", RuntimeWarning, stacklevel=2)
    return buffer.finish()
