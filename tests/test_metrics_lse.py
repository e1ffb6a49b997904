"""lipsync.metrics.lse: LSE-D / LSE-C scoring, window plumbing, whole-frame and in-the-wild modes."""

import numpy as np
import pytest
import torch
from torch import nn

from lipsync.metrics import clips
from lipsync.metrics.lse import (
    VSHIFT,
    LSEError,
    lip_windows,
    lse_from_distances,
    mfcc_windows,
    n_windows,
    offset_distances,
    score_clip,
    score_embeddings,
    score_runs,
    score_video,
    syncnet_embeddings,
    syncnet_mfcc,
)


def _reference_pdist(video, audio, vshift):
    """syncnet_python's calc_pdist, written out with torch (zero-pad audio rows, pairwise_distance)."""
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    return torch.stack(
        [
            torch.nn.functional.pairwise_distance(video[[i]].repeat(win, 1), padded[i : i + win])
            for i in range(len(video))
        ]
    )


@pytest.mark.parametrize("shift", [-4, 0, 3, 15])
def test_constructed_embeddings_recover_offset_and_exact_distances(shift):
    rng = np.random.default_rng(shift + 20)
    n, d = 40, 16
    audio = torch.from_numpy(rng.standard_normal((n + 40, d)))
    noise = 0.01 * torch.from_numpy(rng.standard_normal((n, d)))
    # video window i shows what audio window i + shift says
    video = audio[20 + shift : 20 + shift + n] + noise
    audio = audio[20 : 20 + n]
    dists = offset_distances(video, audio)
    np.testing.assert_allclose(dists, _reference_pdist(video, audio, VSHIFT).numpy(), rtol=1e-12)
    score = score_embeddings(video, audio)
    assert score.offset == -shift
    mdist = dists.mean(0)
    assert score.lse_d == pytest.approx(mdist.min()) and score.lse_d == pytest.approx(mdist[VSHIFT + shift])
    assert score.lse_c == pytest.approx(np.median(mdist) - mdist.min())
    assert score.n_windows == n and score.mdist.shape == (2 * VSHIFT + 1,)
    # at the true offset only the valid rows (not the zero padding) are compared
    valid = [i for i in range(n) if 0 <= i + shift < n]
    want = [float(torch.linalg.vector_norm(noise[i] + 1e-6)) for i in valid]
    np.testing.assert_allclose(dists[valid, VSHIFT + shift], want, rtol=1e-10)


def test_lse_from_distances_min_median_and_first_argmin():
    mdist = np.arange(31, dtype=float)[::-1] + 1.0  # minimum 1.0 at k = 30
    mdist[5] = 1.0  # tie: the first minimum wins, as torch.min
    dists = np.tile(mdist, (3, 1))
    s = lse_from_distances(dists)
    assert (s.lse_d, s.offset) == (1.0, VSHIFT - 5)
    assert s.lse_c == pytest.approx(np.median(mdist) - 1.0)
    with pytest.raises(LSEError, match="31"):
        lse_from_distances(np.zeros((3, 30)))


def test_window_counts_and_columns():
    # syncnet_python: min(frames, samples // 640) - 5 windows
    assert n_windows(100, 640 * 100) == 95
    assert n_windows(100, 640 * 50 + 639) == 45
    assert n_windows(5, 10**6) == 0
    mfcc = np.arange(13 * 60, dtype=np.float32).reshape(13, 60)
    w = mfcc_windows(mfcc, 2, 5)
    assert w.shape == (3, 1, 13, 20)
    assert torch.equal(w[1, 0], torch.from_numpy(mfcc[:, 12:32]))  # frame 3 -> columns [12, 32)
    with pytest.raises(LSEError, match="columns"):
        mfcc_windows(mfcc, 0, 12)
    frames = np.arange(7 * 4 * 4 * 3, dtype=np.uint8).reshape(7, 4, 4, 3)
    lips = lip_windows(frames)
    assert lips.shape == (3, 3, 5, 4, 4)
    assert torch.equal(lips[2, :, 1], torch.from_numpy(frames[3]).permute(2, 0, 1).float() / 255)


def test_mfcc_uses_int16_scale_like_syncnet_python():
    from python_speech_features import mfcc

    rng = np.random.default_rng(0)
    pcm = rng.integers(-3000, 3000, 16000).astype(np.int16)
    ours = syncnet_mfcc(pcm.astype(np.float32) / 32768)
    np.testing.assert_allclose(ours, mfcc(pcm, 16000).T, rtol=1e-5, atol=1e-4)


class LoudnessTwin(nn.Module):
    """Test double with SyncNet v2's interface: embeds frame brightness and MFCC log-energy per frame,
    standardised over the 5 frames, so windows match exactly where picture and sound agree."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _std(x):
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)

    def forward_lip(self, lips):  # (B, 3, 5, 224, 224) RGB [0, 1]
        assert lips.shape[1:] == (3, 5, 224, 224) and lips.max() <= 1
        return self._std(lips.mean((1, 3, 4)))

    def forward_aud(self, mfcc):  # (B, 1, 13, 20); c0 is the log frame energy
        assert mfcc.shape[1:] == (1, 13, 20)
        return self._std(mfcc[:, 0, 0].reshape(-1, 5, 4).mean(-1))


def _talking(n, delay, seed=0, size=224):
    """n frames whose brightness follows random on/off bits; audio loud on the same bits, ``delay`` late."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, n + 20)
    frames = np.stack([np.full((size, size, 3), 40 + 170 * b, np.uint8) for b in bits[:n]])
    t = np.arange(640) / 16000
    tone = np.sin(2 * np.pi * 220 * t)
    lvl = np.concatenate([np.zeros(delay, int), bits])[:n]
    wav = np.concatenate([(0.3 if b else 0.01) * tone for b in lvl]).astype(np.float32)
    wav += 0.001 * rng.standard_normal(len(wav)).astype(np.float32)
    return frames, wav


@pytest.mark.parametrize("delay", [0, 2, 5])
def test_plumbing_aligns_frames_with_mfcc_columns(delay):
    frames, wav = _talking(40, delay, seed=delay)
    model = LoudnessTwin()
    s = score_clip(model, iter(frames), wav, batch_size=7)
    assert s.offset == -delay  # audio late by `delay` frames
    assert s.n_windows == 35
    # streaming with another batch size and array input give the same embeddings
    v1, a1 = syncnet_embeddings(model, frames, wav, batch_size=20)
    v2, a2 = syncnet_embeddings(model, iter(frames), wav, batch_size=3)
    assert torch.allclose(v1, v2, atol=1e-5) and torch.equal(a1, a2)


def test_short_clip_and_bad_frames():
    frames, wav = _talking(5, 0)
    with pytest.raises(LSEError, match="too short"):
        score_clip(LoudnessTwin(), frames, wav)
    with pytest.raises(LSEError, match="224"):
        score_clip(LoudnessTwin(), np.zeros((8, 100, 100, 3), np.uint8), wav)


def test_score_runs_uses_longest_face_run_and_its_audio():
    frames, wav = _talking(50, 0, seed=3)
    items = [(i, None if i in (10, 11) else frames[i]) for i in range(50)]
    score, start, n = score_runs(LoudnessTwin(), items, wav)
    assert (start, n) == (12, 38) and score.offset == 0 and score.n_windows == 33
    with pytest.raises(LSEError, match="no face run"):
        score_runs(LoudnessTwin(), [(i, None if i % 4 == 0 else frames[i]) for i in range(50)], wav)


def test_syncnet_crop_geometry():
    img = np.zeros((400, 400, 3), np.uint8)
    img[..., 0] = np.arange(400)[None, :] % 256  # x
    img[..., 1] = np.arange(400)[:, None] % 256  # y
    # box side 100 -> s = 50; x in [150 - 70, 150 + 70), y in [150 - 50, 150 + 90)
    crop = clips.syncnet_crop(img, (100, 100, 200, 200), size=140)
    np.testing.assert_array_equal(crop, img[100:240, 80:220])
    edge = clips.syncnet_crop(img, (-30, -40, 70, 60), size=140)  # region x in [-50, 90), y in [-40, 100)
    assert (edge[:40] == clips.PAD_VALUE).all() and (edge[:, :50] == clips.PAD_VALUE).all()
    np.testing.assert_array_equal(edge[40:, 50:], img[:100, :90])


def test_real_syncnet_v2_on_video_files_whole_and_wild(tmp_path):
    from media import moving_face_frames, write_video

    from lipsync.models.syncnet_v2 import SyncNetV2

    # whole-frame mode on a file: the plumbing recovers the offset through encode/decode
    frames, wav = _talking(40, 3, seed=9, size=64)
    path = write_video(tmp_path / "blink.mp4", list(frames), fps=25, audio=wav)
    score, start, n = score_video(LoudnessTwin(), path, mode="whole")
    assert start == 0 and n == 40 and abs(score.offset + 3) <= 1
    # in-the-wild mode with the real network (random weights): tracked crops, finite scores
    torch.manual_seed(0)
    net = SyncNetV2().eval()
    face = moving_face_frames(12, size=(180, 240))
    path = write_video(tmp_path / "face.mp4", face, fps=25, audio=wav[: 12 * 640])
    score, start, n = score_video(net, path, mode="wild", batch_size=4)
    assert (start, n) == (0, 12) and score.n_windows == 7
    assert np.isfinite([score.lse_d, score.lse_c]).all() and score.lse_c >= 0
    with pytest.raises(ValueError, match="mode"):
        score_video(net, path, mode="lrs3")
