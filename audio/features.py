"""Audio features: Wav2Lip's log-mel spectrogram (numpy and batched torch) and SyncNet's MFCC.

Both mel paths compute exactly the features the public Wav2Lip weights were trained
on (``WAV2LIP_MEL``):

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``x[-1] = 0``);
2. centred STFT, ``n_fft = win = 800`` (periodic Hann), hop 200, the signal padded by
   400 samples on each side with REFLECT padding (what the release's librosa did;
   librosa >= 0.10 defaults to constant padding) -> ``1 + N // 200`` columns;
3. magnitude, then the 80-band Slaney mel filter bank (55-7600 Hz) of librosa's defaults;
4. ``20 log10(max(S, 1e-5)) - 20`` dB, then ``clip(8 (dB + 100) / 100 - 4, -4, 4)``.

Digital silence (e.g. TTS output with exact zeros) is well defined: its columns are
all -4, the floor of the scale, and nothing is NaN; no noise needs to be added.
Waveforms containing NaN or infinity are rejected with ``AudioError``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

from .constants import SAMPLE_RATE, WAV2LIP_MEL, MelSpec
from .errors import AudioError

if TYPE_CHECKING:  # torch is imported on first use: ``import audio`` stays light for pure decoding
    import torch

__all__ = ["mel_filters", "melspectrogram", "melspectrogram_torch", "mfcc"]

_BLOCK_FRAMES = 4096  # STFT frames processed at once (bounds memory on long audio)


# Slaney's mel scale: Hz per mel on the linear part, where the logarithmic part starts, its step
_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


@lru_cache(maxsize=8)
def mel_filters(spec: MelSpec = WAV2LIP_MEL) -> np.ndarray:
    """Slaney mel filter bank for ``spec``, bit for bit ``librosa.filters.mel`` (its defaults:
    Slaney scale, Slaney area normalisation): (n_mels, n_fft // 2 + 1) float32, read-only.

    Written out here rather than called from librosa: the first ``librosa.filters`` call of a
    process imports scipy.signal and numba, about a second of start-up for every dubbing run,
    for a table of triangles.  ``tests/test_audio_features.py`` checks it against librosa.
    """
    # the operations and their order (float64 triangles rounded to float32, then the area
    # normalisation applied to the float32 values) follow librosa's, so the bank is bit-identical
    # to it: the features, and anything trained on them, do not move by a rounding step
    fft_hz = np.fft.rfftfreq(spec.n_fft, d=1.0 / spec.sample_rate)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(spec.fmin), _hz_to_mel(spec.fmax), spec.n_mels + 2))
    widths = np.diff(edges_hz)  # (n_mels + 1,)
    offsets = np.subtract.outer(edges_hz, fft_hz)  # (n_mels + 2, n_freqs)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # each triangle's area is 1
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=8)
def _hann(spec: MelSpec) -> np.ndarray:
    """Periodic Hann window of ``win_length`` zero-padded (centred) to ``n_fft``, float64."""
    n = np.arange(spec.win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / spec.win_length)
    left = (spec.n_fft - spec.win_length) // 2
    window = np.pad(window, (left, spec.n_fft - spec.win_length - left))
    window.setflags(write=False)
    return window


def _normalize(mel: np.ndarray | torch.Tensor, spec: MelSpec) -> np.ndarray | torch.Tensor:
    """Magnitude mel -> dB -> [-max_abs, max_abs] (works on numpy arrays and tensors alike)."""
    if isinstance(mel, np.ndarray):
        lib = np
    else:
        import torch as lib
    db = 20 * lib.log10(lib.clip(mel, spec.amp_floor, None)) - spec.ref_level_db
    scaled = 2 * spec.max_abs_value * (db - spec.min_level_db) / (-spec.min_level_db) - spec.max_abs_value
    return lib.clip(scaled, -spec.max_abs_value, spec.max_abs_value)


def _reflect_indices(n: int, pad: int) -> np.ndarray:
    """Indices of ``np.pad(x, pad, mode="reflect")`` for a length-``n`` signal (any ``pad``)."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _check_waveform(n_samples: int, finite: bool) -> None:
    if n_samples == 0:
        raise AudioError("cannot compute a mel spectrogram of an empty waveform (0 samples)")
    if not finite:
        raise AudioError("waveform contains NaN or infinite samples; the mel spectrogram is undefined")


def melspectrogram(wav: np.ndarray, spec: MelSpec = WAV2LIP_MEL) -> np.ndarray:
    """Wav2Lip log-mel spectrogram of a mono waveform (numpy).

    Parameters
    ----------
    wav : np.ndarray
        (N,) mono waveform at ``spec.sample_rate`` (16 kHz), float in about [-1, 1].
    spec : MelSpec
        Feature parameters; the default is exactly Wav2Lip's.

    Returns
    -------
    np.ndarray
        (80, T) float32 in [-4, 4] with ``T = 1 + N // 200`` (80 columns per second).
        Silent columns are -4.

    Raises
    ------
    AudioError
        ``wav`` is not 1-D, is empty, or contains NaN/inf.
    """
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"melspectrogram expects a 1-D waveform, got shape {x.shape}")
    _check_waveform(x.size, bool(np.isfinite(x).all()))
    y = x.copy()
    y[1:] -= np.float32(spec.preemphasis) * x[:-1]
    pad = spec.n_fft // 2
    padded = np.pad(y, pad, mode="reflect") if y.size > 1 else np.full(y.size + 2 * pad, y[0])
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop_length]
    n_cols = spec.n_columns(x.size)
    bank = mel_filters(spec)
    window = _hann(spec).astype(np.float32)
    out = np.empty((spec.n_mels, n_cols), np.float32)
    for start in range(0, n_cols, _BLOCK_FRAMES):
        block = frames[start:start + _BLOCK_FRAMES] * window  # (t, n_fft) float32
        magnitude = np.abs(scipy.fft.rfft(block, axis=-1))  # (t, n_fft // 2 + 1) float32
        out[:, start:start + len(block)] = _normalize(bank @ magnitude.T, spec)
    return out


_TORCH_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (spec, device, dtype) -> constants


def _torch_constants(spec: MelSpec, device: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mel bank (n_mels, n_fft//2+1), window (n_fft,)) on ``device``/``dtype``, cached."""
    import torch

    key = (spec, str(device), dtype)
    if key not in _TORCH_CACHE:
        bank = torch.from_numpy(mel_filters(spec).copy()).to(device=device, dtype=dtype)
        window = torch.from_numpy(_hann(spec).copy()).to(device=device, dtype=dtype)
        _TORCH_CACHE[key] = (bank, window)
    return _TORCH_CACHE[key]


def melspectrogram_torch(wav: torch.Tensor, spec: MelSpec = WAV2LIP_MEL,
                         block_frames: int = 16384) -> torch.Tensor:
    """Wav2Lip log-mel spectrogram of one waveform or a batch, on the tensor's device.

    Same features as :func:`melspectrogram` (agrees to about 1e-4 on the [-4, 4]
    scale in float32), vectorised over the batch; runs on CPU or GPU.

    Parameters
    ----------
    wav : torch.Tensor
        (N,) or (B, N) waveform(s) at 16 kHz, float in about [-1, 1].  Integer tensors
        are converted to float32; float64 stays float64.
    spec : MelSpec
        Feature parameters; the default is exactly Wav2Lip's.
    block_frames : int
        STFT frames transformed at once per batch item (bounds memory on long audio).

    Returns
    -------
    torch.Tensor
        (80, T) or (B, 80, T), ``T = 1 + N // 200``, values in [-4, 4], same device,
        float32 (float64 for float64 input).

    Raises
    ------
    AudioError
        ``wav`` is not 1-D/2-D, has no samples, or contains NaN/inf.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(wav, torch.Tensor):
        raise AudioError(f"melspectrogram_torch expects a torch.Tensor, got {type(wav).__name__}")
    if wav.dim() not in (1, 2):
        raise AudioError(f"melspectrogram_torch expects (N,) or (B, N), got shape {tuple(wav.shape)}")
    x = wav if wav.is_floating_point() and wav.dtype in (torch.float32, torch.float64) else wav.float()
    batched = x.dim() == 2
    x = x if batched else x.unsqueeze(0)
    n = x.shape[-1]
    _check_waveform(n, n == 0 or bool(torch.isfinite(x).all()))
    bank, window = _torch_constants(spec, x.device, x.dtype)

    y = x.clone()
    y[:, 1:] -= spec.preemphasis * x[:, :-1]
    pad = spec.n_fft // 2
    if n > pad:
        padded = F.pad(y[:, None], (pad, pad), mode="reflect")[:, 0]
    else:  # torch's reflect padding needs pad < n; numpy's (and librosa's) reflects repeatedly
        padded = y[:, torch.from_numpy(_reflect_indices(n, pad)).to(x.device)]
    n_cols = spec.n_columns(n)
    blocks = []
    for start in range(0, n_cols, block_frames):
        count = min(block_frames, n_cols - start)
        segment = padded[:, start * spec.hop_length: (start + count - 1) * spec.hop_length + spec.n_fft]
        spectrum = torch.stft(segment, spec.n_fft, spec.hop_length, window=window, center=False,
                              return_complex=True).abs()  # (B, n_fft // 2 + 1, count)
        blocks.append(torch.matmul(bank, spectrum))  # (B, n_mels, count)
    out = _normalize(torch.cat(blocks, dim=-1), spec)
    return out if batched else out[0]


def mfcc(wav: np.ndarray, sr: int = SAMPLE_RATE, pcm_scale: float = 32768.0) -> np.ndarray:
    """SyncNet v2's audio input: ``python_speech_features.mfcc`` with its defaults.

    13 cepstra from 26 filters, 25 ms windows every 10 ms, pre-emphasis 0.97, log
    frame energy in place of c0, lifter 22 (the package's defaults, unchanged).

    Parameters
    ----------
    wav : np.ndarray
        (N,) mono waveform, float in about [-1, 1] (e.g. from :func:`load_audio`).
    sr : int
        Sample rate in Hz (SyncNet v2 expects 16000).
    pcm_scale : float
        The waveform is multiplied by this before the MFCC.  syncnet_python read its
        audio as 16-bit PCM integers, so the default 32768 reproduces its input
        exactly (the scale only shifts the energy coefficient c0, by 2 ln(pcm_scale)).
        Use 1.0 for ``python_speech_features.mfcc(wav, sr)`` on the float values.

    Returns
    -------
    np.ndarray
        (T, 13) float32, T = number of 10 ms steps (100 per second at any ``sr``).
    """
    from python_speech_features import mfcc as psf_mfcc

    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise AudioError(f"mfcc expects a non-empty 1-D waveform, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AudioError("waveform contains NaN or infinite samples; the MFCC is undefined")
    return psf_mfcc(x * pcm_scale, samplerate=sr).astype(np.float32)
