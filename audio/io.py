"""Decode the audio track of any media file to a mono float32 waveform (PyAV, streaming).

``load_audio`` is the package's only I/O function.  It reads any container FFmpeg
knows (wav, flac, mp3, m4a/aac, ogg/opus, and the audio stream of mp4/mov/mkv/webm
videos, whichever stream index it has), averages the channels to mono and resamples
with FFmpeg's resampler, one decoded frame at a time.  Memory stays at the result
plus a small buffer: the output is allocated once from the duration the container
declares (pages are only committed as samples arrive) and grown in place when the
declaration is missing or short.
"""

from __future__ import annotations

import logging
import math
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

_GROW_SECONDS = 30.0  # growth step when the declared duration was too short or missing
_UNKNOWN_SECONDS = 60.0  # first allocation when the container declares no duration
_MAX_PREALLOC_SECONDS = 6 * 3600.0  # never trust a declared duration beyond this up front


class _Growable:
    """A float32 buffer filled from the front, grown and trimmed in place (realloc, no copy)."""

    def __init__(self, capacity: int, step: int) -> None:
        self.data = np.empty(max(capacity, 1), np.float32)
        self.size = 0
        self.step = max(step, 1)

    def append(self, chunk: np.ndarray) -> None:
        end = self.size + len(chunk)
        if end > len(self.data):
            # ndarray.resize reallocates in place (mremap for large blocks): no second copy
            self.data.resize(max(end, len(self.data) + self.step), refcheck=False)
        self.data[self.size:end] = chunk
        self.size = end

    def finish(self) -> np.ndarray:
        self.data.resize(self.size, refcheck=False)
        return self.data


def _declared_seconds(container: av.container.InputContainer,
                      stream: av.audio.stream.AudioStream) -> float | None:
    """Duration the file declares for ``stream`` (or the container), in seconds, if any."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


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
        seconds = _declared_seconds(container, stream)
        if seconds is None or not math.isfinite(seconds):
            capacity = int(_UNKNOWN_SECONDS * sr)
        else:  # a little headroom: untouched pages of np.empty cost no memory
            capacity = int(min(seconds * 1.01 + 1.0, _MAX_PREALLOC_SECONDS) * sr)
        buffer = _Growable(capacity, int(_GROW_SECONDS * sr))
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
