"""Named constants of the audio front end and the Wav2Lip feature parameters.

Everything here is a fact of the released Wav2Lip and SyncNet v2 models (see
``docs/usage/audio.md``); changing a value makes features that the released
weights were not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SAMPLE_RATE", "HOP_LENGTH", "MEL_FPS", "MEL_WINDOW", "N_MELS", "MelSpec", "WAV2LIP_MEL"]

SAMPLE_RATE = 16000  # Hz; every model in the project consumes 16 kHz mono
HOP_LENGTH = 200  # samples between mel columns (12.5 ms)
MEL_FPS = SAMPLE_RATE // HOP_LENGTH  # 80 mel columns per second
MEL_WINDOW = 16  # mel columns per video frame window (0.2 s)
N_MELS = 80  # mel bands


@dataclass(frozen=True)
class MelSpec:
    """Parameters of a Wav2Lip-style log-mel spectrogram.

    The defaults are exactly the features the public Wav2Lip weights were trained on.
    """

    sample_rate: int = SAMPLE_RATE  # Hz the waveform is sampled at
    preemphasis: float = 0.97  # first-order filter y[n] = x[n] - k * x[n-1], x[-1] = 0
    n_fft: int = 800  # FFT size (50 ms)
    hop_length: int = HOP_LENGTH  # samples between columns
    win_length: int = 800  # periodic Hann window length
    n_mels: int = N_MELS  # mel bands of the librosa (Slaney) filter bank
    fmin: float = 55.0  # lowest filter-bank frequency, Hz
    fmax: float = 7600.0  # highest filter-bank frequency, Hz
    amp_floor: float = 1e-5  # magnitudes are floored here before 20 * log10
    ref_level_db: float = 20.0  # subtracted from the dB values
    min_level_db: float = -100.0  # dB value mapped to -max_abs_value
    max_abs_value: float = 4.0  # output range is [-max_abs_value, max_abs_value]

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft or self.hop_length <= 0 or self.n_fft <= 0:
            raise ValueError(f"invalid MelSpec sizes: n_fft={self.n_fft}, win_length={self.win_length}, "
                             f"hop_length={self.hop_length}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"invalid MelSpec band: fmin={self.fmin}, fmax={self.fmax}, "
                             f"sample_rate={self.sample_rate}")

    def n_columns(self, n_samples: int) -> int:
        """Number of mel columns for ``n_samples`` samples (centred frames): ``1 + n // hop``."""
        return 1 + n_samples // self.hop_length


WAV2LIP_MEL = MelSpec()  # the features of the released Wav2Lip generator and expert discriminator
