"""Mel windows per video frame: hand-computed starts, exact NTSC rates, both conventions, the end of audio."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audio import AudioError, as_fraction, mel_window_starts, mel_windows, melspectrogram


def ramp_mel(n_cols: int) -> np.ndarray:
    """(80, T) with value = 1000 * band + column, so every slice is recognisable."""
    return (1000 * np.arange(80)[:, None] + np.arange(n_cols)[None]).astype(np.float32)


def test_25fps_inference_starts_by_hand():
    # 80 / 25 = 3.2 columns per frame: floor(0, 3.2, 6.4, 9.6, 12.8, 16, 19.2, 22.4, 25.6, 28.8, 32)
    starts = mel_window_starts(1000, 25, n_frames=11)
    assert starts.tolist() == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    assert starts.dtype == np.int64


def test_25fps_training_convention_is_one_frame_earlier():
    starts = mel_window_starts(1000, 25, n_frames=11, convention="wav2lip_train")
    assert starts.tolist() == [0, 0, 3, 6, 9, 12, 16, 19, 22, 25, 28]  # frame 0 clamped to column 0


def test_ntsc_fraction_starts_are_exact():
    # 80 * 1001 / 30000 = 2.669333...: floor(0, 2.67, 5.34, 8.008, 10.68, 13.35, 16.02, 18.69)
    ntsc = Fraction(30000, 1001)
    assert mel_window_starts(2000, ntsc, n_frames=8).tolist() == [0, 2, 5, 8, 10, 13, 16, 18]
    starts = mel_window_starts(2000, ntsc, n_frames=376)
    assert starts[374] == 998 and starts[375] == 1001  # 375 * 80 * 1001 / 30000 is exactly 1001
    # the same rate written other ways gives the same starts
    for same in ("30000/1001", 30000 / 1001):
        assert (mel_window_starts(2000, same, n_frames=376) == starts).all()


def test_2997_decimal_is_its_own_rate():
    starts = mel_window_starts(10000, 29.97, n_frames=2998)
    assert as_fraction(29.97) == Fraction(2997, 100)
    assert starts[2997] == 8000 and starts[2996] == 7997  # 2997 * 80 / 29.97 = 8000 exactly


FRAME_RATES = st.integers(1, 1001).flatmap(  # any fraction with denominator <= 1001 in [0.1, 120] fps
    lambda den: st.builds(Fraction, st.integers(max(1, den // 10), 120 * den), st.just(den)))


@settings(max_examples=60, deadline=None, database=None)
@given(fps=FRAME_RATES, n_cols=st.integers(16, 3000), n_frames=st.integers(0, 400), train=st.booleans())
def test_starts_follow_the_formula(fps, n_cols, n_frames, train):
    convention = "wav2lip_train" if train else "inference"
    starts = mel_window_starts(n_cols, fps, n_frames=n_frames, convention=convention)
    shift = 1 if train else 0
    expected = [min(max(0, math.floor(80 * (i - shift) / fps)), n_cols - 16) for i in range(n_frames)]
    assert starts.tolist() == expected


@settings(max_examples=60, deadline=None, database=None)
@given(fps=FRAME_RATES, n_cols=st.integers(16, 3000), train=st.booleans())
def test_without_n_frames_every_fitting_frame_then_the_final_window(fps, n_cols, train):
    shift = 1 if train else 0
    starts = mel_window_starts(n_cols, fps, convention="wav2lip_train" if train else "inference")
    fitting = []
    while (s := max(0, math.floor(80 * (len(fitting) - shift) / fps))) <= n_cols - 16:
        fitting.append(s)
    n_fit = len(fitting)
    assert starts[:n_fit].tolist() == fitting
    begins_in_time = s < n_cols  # the first frame that does not fit starts inside the audio
    assert len(starts) == n_fit + begins_in_time
    assert not begins_in_time or starts[-1] == n_cols - 16


def test_end_of_audio_without_n_frames():
    # T = 100 columns: windows fit while floor(3.2 i) <= 84, i.e. i <= 26; frame 27 would start at
    # column 86 < 100, so it gets the last 16 columns (84..99), as the release did: 28 windows.
    starts = mel_window_starts(100, 25)
    assert len(starts) == 28
    assert starts[:27].tolist() == [math.floor(3.2 * i) for i in range(27)]
    assert starts[26] == 83 and starts[27] == 84
    train = mel_window_starts(100, 25, convention="wav2lip_train")
    assert len(train) == 29 and train[-2] == 83 and train[-1] == 84


def test_end_of_audio_when_the_next_frame_starts_after_the_audio():
    # 1 fps: 80 columns per frame; frames 0 and 1 fit (starts 0, 80 <= 84), frame 2 would start at
    # column 160, beyond the audio (T = 100): no extra window for it.
    assert mel_window_starts(100, 1).tolist() == [0, 80]


def test_exactly_one_window_of_audio():
    assert mel_window_starts(16, 25).tolist() == [0, 0]  # the fitting one plus the final one
    assert mel_windows(ramp_mel(16), 25, n_frames=1).shape == (1, 80, 16)


def test_n_frames_gives_exactly_that_many_with_the_last_window_repeated():
    starts = mel_window_starts(100, 25, n_frames=35)
    assert len(starts) == 35
    assert starts[:27].tolist() == [math.floor(3.2 * i) for i in range(27)]
    assert (starts[27:] == 84).all()  # floor(3.2 * 27) = 86 > 84 = T - 16: clamped
    assert len(mel_window_starts(100, 25, n_frames=0)) == 0
    assert mel_windows(ramp_mel(100), 25, n_frames=0).shape == (0, 80, 16)


def test_real_audio_frame_counts():
    seconds = 4.0
    mel = melspectrogram(np.zeros(int(seconds * 16000), np.float32))
    assert mel.shape[1] == 321
    video_frames = int(seconds * 25)
    assert len(mel_windows(mel, 25, n_frames=video_frames)) == video_frames
    # without a frame count, the last few frames' windows would run past the end: 97 of 100
    # (floor(3.2 i) <= 305 for i <= 95, plus the final window)
    assert len(mel_window_starts(mel, 25)) == 97


def test_windows_hold_the_right_columns_numpy_and_torch():
    mel = ramp_mel(200)
    wins = mel_windows(mel, Fraction(30000, 1001), n_frames=80)
    starts = mel_window_starts(mel, Fraction(30000, 1001), n_frames=80)
    assert wins.shape == (80, 80, 16) and wins.dtype == np.float32 and wins.flags.c_contiguous
    for k in (0, 1, 7, 63, 79):
        np.testing.assert_array_equal(wins[k], mel[:, starts[k]:starts[k] + 16])
    twins = mel_windows(torch.from_numpy(mel), Fraction(30000, 1001), n_frames=80)
    assert isinstance(twins, torch.Tensor) and twins.shape == (80, 80, 16)
    np.testing.assert_array_equal(twins.numpy(), wins)
    custom = mel_windows(mel, 25, n_frames=3, window=5)
    np.testing.assert_array_equal(custom[2], mel[:, 6:11])


@pytest.mark.parametrize("fps", [0, -25, float("nan"), float("inf"), "abc", None, True])
def test_invalid_fps(fps):
    with pytest.raises(AudioError, match="frame rate"):
        mel_window_starts(100, fps)


def test_invalid_arguments():
    with pytest.raises(AudioError, match="too short"):
        mel_windows(ramp_mel(15), 25)
    with pytest.raises(AudioError, match="convention"):
        mel_window_starts(100, 25, convention="train")
    with pytest.raises(AudioError, match="n_frames"):
        mel_window_starts(100, 25, n_frames=-1)
    with pytest.raises(AudioError, match="window"):
        mel_window_starts(100, 25, window=0)
    with pytest.raises(AudioError, match="n_mels, T"):
        mel_windows(np.zeros(100), 25)
