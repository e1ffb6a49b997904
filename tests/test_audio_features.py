"""Wav2Lip mel features (numpy and torch) against a plain librosa computation; SyncNet MFCC."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import python_speech_features
import torch
from media import speech_like

from audio import AudioError, MelSpec, melspectrogram, melspectrogram_torch, mfcc
from audio.features import mel_filters

TOL = 1e-3  # on the [-4, 4] scale


def librosa_reference(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's features written out with librosa: pre-emphasis, reflect-padded STFT, mel, dB, scale."""
    x = np.asarray(wav, np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    with warnings.catch_warnings():  # librosa warns that n_fft exceeds very short signals
        warnings.simplefilter("ignore", UserWarning)
        stft = librosa.stft(y, n_fft=800, hop_length=200, win_length=800, window="hann", center=True,
                            pad_mode="reflect")
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, bank @ np.abs(stft))) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def _sine(n: int, hz: float, amp: float) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / 16000)).astype(np.float32)


SIGNALS = {
    "speech": lambda: speech_like(2.0, seed=1),
    "silence": lambda: np.zeros(4000, np.float32),
    "clipping": lambda: np.clip(_sine(8000, 220, 3.0), -1, 1),
    "dc": lambda: np.full(6000, 0.5, np.float32),
    "dc_plus_speech": lambda: 0.4 + speech_like(0.7, seed=2),
    "noise": lambda: np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32),
    "tts_gap": lambda: np.concatenate([speech_like(0.5), np.zeros(8000, np.float32), speech_like(0.5)]),
    "len_1": lambda: np.array([0.3], np.float32),
    "len_2": lambda: np.array([0.3, -0.2], np.float32),
    "len_150": lambda: speech_like(150 / 16000, seed=4),
    "len_399": lambda: speech_like(399 / 16000, seed=5),
    "len_400": lambda: speech_like(400 / 16000, seed=5),
    "len_799": lambda: speech_like(799 / 16000, seed=6),
    "len_1001": lambda: speech_like(1001 / 16000, seed=7),
}


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (16000, 800, 80, 55.0, 7600.0),  # Wav2Lip's
    (22050, 2048, 128, 0.0, 11025.0),  # across the 1 kHz knee of the scale, up to Nyquist
    (16000, 512, 40, 20.0, 900.0),  # entirely on the linear part
    (8000, 256, 24, 1200.0, 3900.0),  # entirely on the logarithmic part
])
def test_mel_filters_equal_librosa(sr, n_fft, n_mels, fmin, fmax):
    spec = MelSpec(sample_rate=sr, n_fft=n_fft, win_length=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ours = mel_filters(spec)
    expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)  # bit for bit: trained models see the same features
    assert not ours.flags.writeable


@pytest.mark.parametrize("name", list(SIGNALS))
def test_numpy_and_torch_match_librosa(name):
    wav = SIGNALS[name]()
    expected = librosa_reference(wav)
    ours = melspectrogram(wav)
    batched = melspectrogram_torch(torch.from_numpy(wav))
    assert ours.shape == expected.shape == (80, 1 + len(wav) // 200)
    assert ours.dtype == np.float32 and batched.dtype == torch.float32
    np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)
    np.testing.assert_allclose(batched.numpy(), expected, atol=TOL, rtol=0)
    assert np.isfinite(ours).all() and ours.min() >= -4 and ours.max() <= 4


def test_features_cover_the_scale():
    loud = 100 * speech_like(0.5, seed=12)  # far above full scale: saturates the top of the scale
    mel = melspectrogram(loud)
    assert mel.max() == 4.0
    np.testing.assert_allclose(mel, librosa_reference(loud), atol=TOL, rtol=0)
    assert (melspectrogram(np.zeros(3000, np.float32)) == -4.0).all()  # digital silence: the floor


def test_digital_silence_inside_speech_is_defined():
    """TTS output with exact zeros: finite features, floor (-4) where the window sees only zeros."""
    wav = np.concatenate([speech_like(0.5), np.zeros(16000, np.float32), speech_like(0.5)])
    mel = melspectrogram(wav)
    assert np.isfinite(mel).all()
    inside = mel[:, 40 + 3: 120 - 3]  # columns whose 800-sample frame lies inside the silent second
    assert (inside == -4.0).all()
    assert mel[:, :30].max() > -1 and mel[:, -30:].max() > -1  # speech around it is untouched


def test_torch_batch_equals_rows():
    batch = torch.from_numpy(np.stack([speech_like(0.6, seed=s) for s in range(3)]))
    out = melspectrogram_torch(batch)
    assert out.shape == (3, 80, 1 + batch.shape[1] // 200)
    for row, mel in zip(batch, out):
        torch.testing.assert_close(mel, melspectrogram_torch(row), atol=1e-5, rtol=0)


def test_torch_blocks_and_dtypes():
    wav = torch.from_numpy(speech_like(1.0, seed=8))
    full = melspectrogram_torch(wav)
    torch.testing.assert_close(melspectrogram_torch(wav, block_frames=7), full, atol=1e-5, rtol=0)
    as64 = melspectrogram_torch(wav.double())
    assert as64.dtype == torch.float64
    np.testing.assert_allclose(as64.numpy(), librosa_reference(wav.numpy()), atol=1e-6)
    pcm = (wav * 32767).round().to(torch.int16)
    assert melspectrogram_torch(pcm).dtype == torch.float32  # integers become float32


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_torch_runs_on_device(device):
    wav = torch.from_numpy(speech_like(0.5, seed=9)).to(device)
    out = melspectrogram_torch(wav[None].repeat(2, 1))
    assert out.device.type == device
    np.testing.assert_allclose(out[1].cpu().numpy(), librosa_reference(wav.cpu().numpy()), atol=TOL, rtol=0)


def test_numpy_long_input_is_processed_in_blocks():
    import audio.features as features

    wav = speech_like(3.0, seed=10)  # 241 columns, computed in blocks of 100 frames below

    expected = melspectrogram(wav)
    old = features._BLOCK_FRAMES
    features._BLOCK_FRAMES = 100
    try:
        np.testing.assert_array_equal(melspectrogram(wav), expected)
    finally:
        features._BLOCK_FRAMES = old


@pytest.mark.parametrize("bad, reason", [
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.nan, 0.2]), "NaN"),
    (np.array([0.1, np.inf]), "NaN or infinite"),
    (np.zeros((2, 100)), "1-D"),
])
def test_bad_waveforms_raise(bad, reason):
    with pytest.raises(AudioError, match=reason):
        melspectrogram(bad)
    if bad.ndim == 1:
        with pytest.raises(AudioError, match=reason):
            melspectrogram_torch(torch.from_numpy(bad))


def test_torch_rejects_bad_shapes():
    with pytest.raises(AudioError, match="shape"):
        melspectrogram_torch(torch.zeros(2, 2, 100))
    with pytest.raises(AudioError, match="torch.Tensor"):
        melspectrogram_torch(np.zeros(100))


def test_mfcc_is_python_speech_features_on_int16_scale():
    wav = speech_like(2.0, seed=11)
    ours = mfcc(wav)
    direct = python_speech_features.mfcc(wav.astype(np.float64) * 32768, 16000)
    assert ours.shape == (199, 13) and ours.dtype == np.float32  # 1 + ceil((32000 - 400) / 160) frames
    np.testing.assert_allclose(ours, direct.astype(np.float32), rtol=0, atol=0)
    unscaled = mfcc(wav, pcm_scale=1.0)
    np.testing.assert_allclose(unscaled, python_speech_features.mfcc(wav.astype(np.float64), 16000),
                               rtol=1e-6, atol=1e-4)
    # the PCM scale only shifts the energy coefficient c0, by 2 ln(32768)
    np.testing.assert_allclose(ours[:, 1:], unscaled[:, 1:], atol=1e-3)
    np.testing.assert_allclose(ours[:, 0] - unscaled[:, 0], 2 * np.log(32768), atol=1e-3)


def test_mfcc_rejects_bad_input():
    with pytest.raises(AudioError):
        mfcc(np.zeros(0))
    with pytest.raises(AudioError):
        mfcc(np.array([np.nan] * 800))
