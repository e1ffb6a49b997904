"""One mel window per video frame, for any frame rate (exact rational arithmetic).

A video frame ``i`` at ``fps`` frames per second covers the mel columns starting at
``floor(i * 80 / fps)`` (80 mel columns per second); its window is the 16 columns
(0.2 s) from there.  Two conventions exist in the Wav2Lip release:

``"inference"``
    Frame ``i`` starts at ``floor(80 i / fps)``.  The release's inference script.
``"wav2lip_train"``
    Frame ``i`` starts one frame earlier, at ``max(0, floor(80 (i - 1) / fps))``: the
    release's generator training data pairs the face of frame ``k`` with the mel
    window of frame ``k - 1`` (its sync discriminator does not), the one-frame
    train/inference mismatch users report.  Frame 0 is clamped to column 0 (the
    release skipped such samples instead).

Project choice: every model of this project trains and infers with ``"inference"``;
``"wav2lip_train"`` exists only to reproduce the release's training data.

Starts are computed with ``fractions.Fraction``, so NTSC rates (``30000/1001``) land
exactly on integer boundaries (frame 375 starts at column 1001, not 1000).  A float
fps is read as the nearest fraction with a denominator up to 1001 when that is
within a relative 1e-9 of it (29.97 -> 2997/100, 29.97002997... -> 30000/1001), else exactly.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np

from .constants import MEL_FPS, MEL_WINDOW
from .errors import AudioError

if TYPE_CHECKING:
    import torch

__all__ = ["CONVENTIONS", "as_fraction", "mel_window_starts", "mel_windows"]

CONVENTIONS = ("inference", "wav2lip_train")


def as_fraction(fps: float | Fraction | str) -> Fraction:
    """A frame rate as an exact positive ``Fraction`` (see the module docstring for floats)."""
    try:
        if isinstance(fps, float):
            if not np.isfinite(fps):
                raise ValueError
            approx = Fraction(fps).limit_denominator(1001)
            value = approx if abs(float(approx) - fps) <= 1e-9 * abs(fps) else Fraction(fps)
        elif isinstance(fps, (Real, str)) and not isinstance(fps, bool):
            value = Fraction(fps)
        else:
            raise TypeError
    except (ValueError, TypeError, ZeroDivisionError) as e:
        raise AudioError(f"invalid frame rate {fps!r}: expected a positive number or fraction") from e
    if value <= 0:
        raise AudioError(f"invalid frame rate {fps!r}: must be positive")
    return value


def _n_columns(mel: np.ndarray | torch.Tensor | int) -> int:
    if isinstance(mel, (int, np.integer)):
        return int(mel)
    shape = getattr(mel, "shape", None)
    if shape is None or len(shape) < 1:
        raise AudioError(f"expected a mel spectrogram (..., T) or a column count, got {type(mel).__name__}")
    return int(shape[-1])


def mel_window_starts(mel: np.ndarray | torch.Tensor | int, fps: float | Fraction | str,
                      n_frames: int | None = None, convention: str = "inference",
                      window: int = MEL_WINDOW) -> np.ndarray:
    """First mel column of each video frame's window.

    Parameters
    ----------
    mel : np.ndarray, torch.Tensor or int
        A mel spectrogram (..., T) or its column count T (80 columns per second).
    fps : float, Fraction or str
        Video frame rate, e.g. 25, 29.97, ``Fraction(30000, 1001)`` or ``"30000/1001"``.
    n_frames : int, optional
        Number of video frames.  Given: exactly ``n_frames`` starts; starts past
        ``T - window`` are clamped there (the last window repeats).  None: one start per
        frame whose window fits inside the audio, then, as in the release, one final
        start ``T - window`` for the next frame if that frame begins before the end of
        the audio (a window made of the last ``window`` columns).
    convention : {"inference", "wav2lip_train"}
        See the module docstring; the project uses "inference".
    window : int
        Columns per window (16 = 0.2 s).

    Returns
    -------
    np.ndarray
        (n,) int64 column indices, each in [0, T - window].

    Raises
    ------
    AudioError
        Fewer than ``window`` columns (audio shorter than one window), an invalid fps,
        convention, window or ``n_frames``.
    """
    if convention not in CONVENTIONS:
        raise AudioError(f"unknown mel window convention {convention!r}; choose one of {CONVENTIONS}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 0:
        raise AudioError(f"window must be a positive integer, got {window!r}")
    rate = as_fraction(fps)
    n_cols = _n_columns(mel)
    if n_cols < window:
        raise AudioError(f"audio too short: {n_cols} mel columns ({n_cols / MEL_FPS:.3f} s), "
                         f"a window needs {window} ({window / MEL_FPS:.3f} s)")
    last = n_cols - window
    shift = 1 if convention == "wav2lip_train" else 0
    # floor(MEL_FPS * (i - shift) / rate) exactly: (i - shift) * MEL_FPS * den // num
    num, den = rate.numerator, rate.denominator

    def starts_of(count: int) -> np.ndarray:
        i = np.arange(count, dtype=object)  # Python ints: no overflow, exact floors
        return np.maximum((i - shift) * (MEL_FPS * den) // num, 0).astype(np.int64).reshape(count)

    if n_frames is not None:
        if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 0:
            raise AudioError(f"n_frames must be a non-negative integer, got {n_frames!r}")
        return np.minimum(starts_of(int(n_frames)), last)
    # frames whose window fits: floor(80 (i - shift) / fps) <= last  <=>  i - shift < (last + 1) fps / 80
    n_fit = -(-(last + 1) * num // (MEL_FPS * den)) + shift
    starts = starts_of(n_fit + 1)  # one more: the next frame's start decides the final window
    if starts[-1] < n_cols:  # the next frame begins inside the audio: it gets the last window
        starts[-1] = last
        return starts
    return starts[:-1]


def mel_windows(mel: np.ndarray | torch.Tensor, fps: float | Fraction | str, n_frames: int | None = None,
                convention: str = "inference", window: int = MEL_WINDOW) -> np.ndarray | torch.Tensor:
    """The mel window of every video frame.

    Parameters
    ----------
    mel : np.ndarray or torch.Tensor
        (n_mels, T) mel spectrogram (e.g. from :func:`melspectrogram`, 80 columns/s).
    fps, n_frames, convention, window
        As in :func:`mel_window_starts` (which gives the start columns).

    Returns
    -------
    np.ndarray or torch.Tensor
        (n, n_mels, window), same type, dtype and device as ``mel``; a copy.
        ``n = n_frames`` when given, else as described in :func:`mel_window_starts`.

    Raises
    ------
    AudioError
        ``mel`` is not 2-D, or any reason of :func:`mel_window_starts`.
    """
    if getattr(mel, "ndim", None) != 2:
        raise AudioError(f"mel_windows expects a (n_mels, T) array, got shape {getattr(mel, 'shape', None)}")
    starts = mel_window_starts(mel, fps, n_frames, convention, window)
    columns = starts[:, None] + np.arange(window)  # (n, window)
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported
    if torch is not None and isinstance(mel, torch.Tensor):
        index = torch.from_numpy(columns).to(mel.device)
        return mel[:, index].permute(1, 0, 2).contiguous()
    return np.ascontiguousarray(np.asarray(mel)[:, columns].transpose(1, 0, 2))
