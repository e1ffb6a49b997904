"""Audio front end: decode any media file's audio track and compute the model features.

Public API::

    from audio import load_audio, melspectrogram, mel_windows
    wav = load_audio("speech.m4a")            # (N,) float32 mono at 16 kHz
    mel = melspectrogram(wav)                 # (80, 1 + N // 200) float32 in [-4, 4]
    windows = mel_windows(mel, fps=25)        # (n_frames, 80, 16): one window per video frame

``melspectrogram_torch`` computes the same features for (N,) or (B, N) tensors on any
device; ``mfcc`` gives SyncNet v2's input.  Every failure raises ``AudioError``.
"""

from .constants import HOP_LENGTH, MEL_FPS, MEL_WINDOW, N_MELS, SAMPLE_RATE, WAV2LIP_MEL, MelSpec
from .errors import AudioError
from .features import mel_filters, melspectrogram, melspectrogram_torch, mfcc
from .io import load_audio
from .windows import CONVENTIONS, as_fraction, mel_window_starts, mel_windows

__all__ = [
    "SAMPLE_RATE",
    "HOP_LENGTH",
    "MEL_FPS",
    "MEL_WINDOW",
    "N_MELS",
    "MelSpec",
    "WAV2LIP_MEL",
    "AudioError",
    "load_audio",
    "mel_filters",
    "melspectrogram",
    "melspectrogram_torch",
    "mfcc",
    "CONVENTIONS",
    "as_fraction",
    "mel_window_starts",
    "mel_windows",
]
