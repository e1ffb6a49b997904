"""Feature extraction: windows, frame preparation, extract_video, face crops, the CLI."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from media import moving_face_frames, speech_like, write_video

from marlin import Marlin, extract_features, extract_video
from marlin.features import iter_windows, prepare_frames, window_starts

FPS = 25


@pytest.fixture(scope="module")
def model() -> Marlin:
    torch.manual_seed(0)
    return Marlin.from_config("vit_tiny", with_decoder=False, img_size=32, n_frames=4).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """24 frames, 48 x 64 (not square), distinct content per frame."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(24, 48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def video(tmp_path_factory, frames):
    # audio stream added first: stream 0 is audio (broke the release's frame count)
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    return write_video(path, frames, fps=FPS, audio=speech_like(1.0), codec="libx264")


def _fake(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(index=i, time=i / FPS, image=i) for i in range(n)]


def test_window_starts_include_last_window_and_pad_short():
    assert window_starts(32, 16, 16) == [0, 16]  # the release dropped the last exact window
    assert window_starts(33, 16, 16) == [0, 16]
    assert window_starts(47, 16, 16) == [0, 16]
    assert window_starts(48, 16, 16) == [0, 16, 32]
    assert window_starts(10, 16, 16) == [0]
    assert window_starts(0, 16, 16) == []
    with pytest.raises(ValueError):
        window_starts(10, 16, 0)


def test_iter_windows_sampling_and_short_videos():
    wins = list(iter_windows(_fake(64), n_frames=16, sample_rate=2, stride=16))
    assert [w[0] for w in wins] == [0, 32]
    assert wins[1][2] == list(range(32, 64, 2))
    assert wins[1][1] == pytest.approx(32 / FPS)
    # consistent with window_starts over the sampled frames
    for n in (40, 63, 64, 65, 97):
        got = [w[0] for w in iter_windows(_fake(n), 16, 2, 4)]
        assert got == [2 * s for s in window_starts(len(range(0, n, 2)), 16, 4)]
    # 16 < T < 32 frames: the first 16 frames at the densest rate that fits
    (short,) = iter_windows(_fake(20), 16, 2, 16)
    assert short[2] == list(range(16))
    # fewer frames than a window: padded by repeating the last frame
    (tiny,) = iter_windows(_fake(10), 16, 2, 16)
    assert tiny[2] == list(range(10)) + [9] * 6
    assert list(iter_windows(_fake(0), 16, 2, 16)) == []
    # a transform is applied once per used frame; windows carry the transformed images
    calls = []
    wins = list(iter_windows(_fake(64), 16, 2, 16, transform=lambda im: calls.append(im) or -im))
    assert wins[1][2] == [-i for i in range(32, 64, 2)]
    assert len(calls) == len(set(calls)) and set(range(0, 64, 2)) <= set(calls)


def test_prepare_frames_centre_crop_and_resize():
    img = np.zeros((2, 40, 80, 3), np.uint8)
    img[:, :, :20] = (255, 0, 0)
    img[:, :, 20:60] = (0, 255, 0)
    img[:, :, 60:] = (0, 0, 255)
    clip = prepare_frames(img, 32)
    assert clip.shape == (3, 2, 32, 32) and clip.dtype == torch.float32
    torch.testing.assert_close(clip[1], torch.ones(2, 32, 32))  # only the green centre remains
    assert clip[0].abs().max() < 1e-6 and clip[2].abs().max() < 1e-6
    with pytest.raises(ValueError, match="frames must be"):
        prepare_frames(np.zeros((2, 8, 8)), 32)


def test_extract_video_matches_direct_features(model, frames, video):
    res = extract_video(model, video, sample_rate=2, stride=2, batch_size=3)
    # 24 frames -> 12 sampled -> windows of 4 starting every 2 sampled: 0, 2, 4, 6, 8
    assert res.start_frames.tolist() == [0, 4, 8, 12, 16]
    np.testing.assert_allclose(res.start_times.numpy(), np.array([0, 4, 8, 12, 16]) / FPS, atol=1e-3)
    assert res.features.shape == (5, model.config.encoder_dim)
    from marlin.video import read_frames

    decoded = read_frames(video)[::2]  # the decoded (lossy) frames, sampled
    clips = torch.stack([prepare_frames(decoded[s: s + 4], 32) for s in (0, 2, 4, 6, 8)])
    want = extract_features(model, clips, keep_seq=False)
    torch.testing.assert_close(res.features, want, rtol=1e-5, atol=1e-5)
    # batching does not change results; reductions and per-token output
    one = extract_video(model, video, sample_rate=2, stride=2, batch_size=1)
    torch.testing.assert_close(one.features, res.features, rtol=1e-5, atol=1e-5)
    mean = extract_video(model, video, sample_rate=2, stride=2, reduction="mean")
    torch.testing.assert_close(mean.features, res.features.mean(0), rtol=1e-5, atol=1e-5)
    seq = extract_video(model, video, sample_rate=2, stride=4, keep_seq=True)
    assert seq.features.shape == (3, model.config.n_tokens, model.config.encoder_dim)
    assert not model.training


def test_extract_video_other_containers_and_short(model, frames, tmp_path):
    webm = write_video(tmp_path / "clip.webm", frames[:9], fps=FPS, codec="libvpx-vp9")
    res = extract_video(model, webm, sample_rate=1, stride=4)
    assert res.start_frames.tolist() == [0, 4]  # 9 frames: windows 0-3 and 4-7
    mkv = write_video(tmp_path / "short.mkv", frames[:3], fps=FPS)
    short = extract_video(model, mkv)  # 3 frames < 4: one padded window
    assert len(short) == 1 and short.features.shape == (1, model.config.encoder_dim)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="broken.mp4"):
        extract_video(model, bad)
    with pytest.raises(ValueError, match="reduction"):
        extract_video(model, mkv, reduction="median")


def test_crop_face_follows_the_face(tmp_path):
    from marlin.face import iter_marlin_crops

    # a face drifting right across a wide frame
    imgs = moving_face_frames(10, size=(160, 320), path=lambda i: (100 + 12 * i, 80, 0.25))
    path = write_video(tmp_path / "face.mp4", imgs, fps=FPS)
    crops = [f.image for f in iter_marlin_crops(path, size=64)]
    assert len(crops) == 10 and all(c.shape == (64, 64, 3) for c in crops)
    # crops follow the face: consecutive crops differ far less than consecutive centre squares
    centre = prepare_frames(np.stack(imgs), 64).permute(1, 2, 3, 0).numpy() * 255
    crop_change = np.mean([np.abs(crops[i + 1].astype(float) - crops[i]).mean() for i in range(9)])
    centre_change = np.mean([np.abs(centre[i + 1] - centre[i]).mean() for i in range(9)])
    assert crop_change < 0.5 * centre_change
    model = Marlin.from_config("vit_tiny", with_decoder=False, img_size=64, n_frames=4).eval()
    res = extract_video(model, path, crop_face=True, sample_rate=1, stride=4)
    assert res.start_frames.tolist() == [0, 4]


def test_cli(model, video, tmp_path, capsys):
    from marlin.extract import main

    ckpt = tmp_path / "tiny.safetensors"
    model.save(ckpt)
    out = tmp_path / "feats.npy"
    done = subprocess.run([sys.executable, "-m", "marlin.extract", "--video", str(video), "--checkpoint",
                           str(ckpt), "--out", str(out), "--stride", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.load(out).shape == (5, model.config.encoder_dim)
    npz = tmp_path / "feats.npz"
    assert main(["--video", str(video), "--checkpoint", str(ckpt), "--out", str(npz), "--stride", "4",
                 "--reduction", "mean"]) == 0
    with np.load(npz) as data:
        assert data["features"].shape == (model.config.encoder_dim,)
        np.testing.assert_allclose(data["start_times"], np.array([0, 8, 16]) / FPS, atol=1e-3)
    capsys.readouterr()
    base = ["--video", str(video), "--checkpoint", str(ckpt)]
    for args, reason in [
        (["--video", str(tmp_path / "missing.mp4"), "--checkpoint", str(ckpt), "--out", "a.npy"],
         "video not found"),
        (["--video", str(video), "--checkpoint", str(tmp_path / "no.pt"), "--out", str(tmp_path / "b.npy")],
         "checkpoint file not found"),
        ([*base, "--out", str(tmp_path / "c.txt")], "must end in .npy"),
        ([*base, "--out", str(tmp_path / "d.npy"), "--stride", "0"], "--stride must be"),
        ([*base, "--checkpoint", str(video), "--out", str(tmp_path / "e.npy")], "cannot read checkpoint"),
    ]:
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npy", "feats.npz", "tiny.safetensors"]
