"""``lipsync.data.datasets``: generator and sync-expert samples over the preprocessed layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_train import one_thread_fixture
from media import face_photo, place

from audio import mel_windows, melspectrogram
from lipsync.data.datasets import LipSyncDataset, SyncDataset, fixed_keys, frame_mel_start, mel_columns
from marlin.data import DataError, write_clip

SR, FPS = 16000, 25


_one_thread = one_thread_fixture()  # tiny models: one intra-op thread is fastest


def envelope(n_frames: int, seed: int) -> np.ndarray:
    """A syllable-like opening in [0, 1] per 1/16000 s: rectified sine at 2.5-4 Hz, random phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * SR // FPS) / SR
    return np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.0) * t + rng.uniform(0, 6)), 0, None) ** 0.7


def talking_frames(opening: np.ndarray, size: int, photo: str) -> np.ndarray:
    """A real face photo whose mouth is a dark ellipse opened by ``opening`` (T,) in [0, 1]."""
    import cv2

    base = place(face_photo(photo), (size, size), (size / 2, size / 2), 1.15 * size / 512)
    frames = []
    for o in opening:
        f = base.copy()
        cv2.ellipse(f, (size // 2, int(size * 0.72)), (size // 7, max(1, int(size * 0.12 * o))), 0, 0, 360,
                    (60, 10, 20), -1, lineType=cv2.LINE_AA)
        frames.append(f)
    return np.stack(frames)


def mouth_landmarks(opening: np.ndarray, size: int) -> np.ndarray:
    """(T, 478, 2) face-mesh points of :func:`talking_frames`' mouth: the inner-lip pairs of
    ``lipsync.data.synthetic.landmarks`` on the ellipse's top and bottom, the outer eye corners
    0.4 * size apart (so ``mouth_opening`` is 0.6 * ``opening``); every other point at the centre."""
    from lipsync.data.synthetic.landmarks import EYE_OUTER, INNER_GAP_PAIRS

    pts = np.full((len(opening), 478, 2), size / 2, np.float32)
    half = size * 0.12 * np.asarray(opening, np.float32)
    for top, bottom in INNER_GAP_PAIRS:
        pts[:, top, 1], pts[:, bottom, 1] = int(size * 0.72) - half, int(size * 0.72) + half
    pts[:, EYE_OUTER[0], 0], pts[:, EYE_OUTER[1], 0] = 0.3 * size, 0.7 * size
    return pts


def talking_clips(root, n: int = 4, n_frames: int = 60, size: int = 48, seed: int = 0,
                  landmarks: bool = False) -> list[str]:
    """``n`` clips in the preprocessed layout whose mouth opening follows the loudness of the audio
    (with ``landmarks``: and face-mesh landmarks that measure that opening, :func:`mouth_landmarks`)."""
    ids = []
    for i in range(n):
        env = envelope(n_frames, seed + i)
        t = np.arange(len(env)) / SR
        voiced = sum(np.sin(2 * np.pi * k * 140 * t) / k for k in range(1, 8))
        noise = 0.003 * np.random.default_rng(i).standard_normal(len(t))
        audio = (0.3 * env * voiced + noise).astype(np.float32)
        opening = env.reshape(n_frames, -1).mean(1)
        photo = ("astronaut", "grace_hopper")[i % 2]
        opening = opening / max(opening.max(), 1e-6)
        frames = talking_frames(opening, size, photo)
        cid = f"talk{i}"
        write_clip(root, cid, frames, audio=audio, meta={"identity": f"person{i}"},
                   landmarks=mouth_landmarks(opening, size) if landmarks else None)
        ids.append(cid)
    return ids


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lipdata")
    talking_clips(root, n=3, n_frames=60, size=48)
    return root


def test_mel_columns_follow_the_inference_convention():
    assert mel_columns(5) == 28 and mel_columns(16) == 64
    assert [frame_mel_start(i) for i in range(5)] == [0, 3, 6, 9, 12]


def test_generator_samples(data):
    ds = LipSyncDataset(data, ["talk0", "talk1"], n_frames=5, size=32)
    a, b = ds[(0, 123)], ds[(0, 123)]
    assert a["faces"].shape == (6, 5, 32, 32) and a["target"].shape == (3, 5, 32, 32)
    assert a["mels"].shape == (5, 1, 80, 16) and a["window_mel"].shape == (1, 80, 28)
    assert all(torch.equal(a[k], b[k]) for k in ("faces", "mels"))  # the seed fixes the sample
    assert a["faces"][:3, :, 16:].abs().max() == 0  # lower half of the target masked ...
    assert torch.equal(a["faces"][:3, :, :16], a["target"][:, :, :16])  # ... upper half kept
    assert a["ref_start"] != a["start"]
    for seed in range(40):  # the reference window never overlaps the target window
        item = ds[(seed % 2, seed)]
        assert abs(item["ref_start"] - item["start"]) >= 5 and 0 <= item["ref_start"] <= 55
    starts = {ds[(0, s)]["start"] for s in range(30)}
    assert len(starts) > 5 and max(starts) <= 55
    # per-frame mels are exactly audio.mel_windows(..., "inference") of the clip's audio
    from audio import load_audio

    mel = melspectrogram(load_audio(data / "talk0" / "audio.wav"))
    want = mel_windows(mel, FPS, n_frames=60, convention="inference")[a["start"]:a["start"] + 5]
    np.testing.assert_allclose(a["mels"][:, 0].numpy(), want)
    np.testing.assert_allclose(a["window_mel"][0, :, :16].numpy(), want[0])
    fixed = ds[1]  # an int key gives the fixed (centre) sample
    assert fixed["start"] == (60 - 5) // 2 and torch.equal(fixed["faces"], ds[1]["faces"])


def test_sync_samples_positive_and_negative_within_offset(data):
    ds = SyncDataset(data, ["talk0", "talk1", "talk2"], n_frames=5, face_size=(24, 48), max_offset=20,
                     min_offset=3)
    items = [ds[(i % 3, s)] for i, s in enumerate(range(200))]
    labels = np.array([float(it["label"]) for it in items])
    offsets = np.array([it["offset"] for it in items])
    assert items[0]["lower"].shape == (3, 5, 24, 48) and items[0]["mel"].shape == (1, 80, 16)
    assert 0.3 < labels.mean() < 0.7
    assert np.all(offsets[labels == 1] == 0)
    neg = np.abs(offsets[labels == 0])
    assert neg.min() >= 3 and neg.max() <= 20 and len(set(neg)) > 5
    # a negative's audio is the window of the shifted frame, inside the same clip
    from audio import load_audio

    it = next(x for x in items if x["label"] == 0)
    mel = melspectrogram(load_audio(data / f"talk{it['index']}" / "audio.wav"))
    s = frame_mel_start(it["start"] + it["offset"])
    np.testing.assert_allclose(it["mel"][0].numpy(), mel[:, s:s + 16])
    big = SyncDataset(data, ["talk0"], n_frames=16, face_size=(24, 48))
    assert big[0]["mel"].shape == (1, 80, 64) and big[0]["lower"].shape == (3, 16, 24, 48)
    keys = fixed_keys(6, len(ds), seed=1)
    assert keys == fixed_keys(6, len(ds), seed=1) and [k[0] for k in keys] == [0, 1, 2, 0, 1, 2]


def test_bad_data_is_a_clear_error(data, tmp_path):
    write_clip(tmp_path, "mute", np.zeros((30, 16, 16, 3), np.uint8))  # no audio.wav
    with pytest.raises(DataError, match="no audio.wav"):
        LipSyncDataset(tmp_path, ["mute"])
    with pytest.raises(DataError, match="frames a sample needs"):
        SyncDataset(data, ["talk0"], n_frames=16, min_offset=50, max_offset=60)


def test_mouth_mask_follows_the_lips_region(data, tmp_path):
    frames = np.zeros((20, 48, 48, 3), np.uint8)
    regions = np.ones((20, 48, 48), np.uint8)  # skin
    for t in range(20):  # lips (id 5) moving right by a pixel per frame
        regions[t, 34:38, 10 + t:20 + t] = 5
    audio = np.zeros(20 * SR // FPS, np.float32)
    write_clip(tmp_path, "lips", frames, regions=regions, audio=audio, meta={"identity": "x"})
    ds = LipSyncDataset(tmp_path, ["lips"], n_frames=5, size=96)
    item = ds[(0, 1)]
    mouth = item["mouth"]
    assert mouth.shape == (1, 5, 96, 96) and set(mouth.unique().tolist()) == {0.0, 1.0}
    for k in range(5):  # covers the lips (scaled 2x) plus a margin, nothing far from them
        t = item["start"] + k
        lips = mouth[0, k, 68:76, 2 * (10 + t):2 * (20 + t)]
        assert lips.min() == 1
        ys, xs = torch.nonzero(mouth[0, k], as_tuple=True)
        assert ys.min() >= 68 - 10 and ys.max() <= 76 + 10 and xs.min() >= 2 * (10 + t) - 10
    assert torch.isnan(item["opening"]).all() and item["opening"].shape == (5,)  # no landmarks stored
    assert torch.isnan(item["width"]).all() and item["width"].shape == (5,)
    assert torch.isnan(item["geometry"]).all() and item["geometry"].shape == (5, 5)
    assert torch.isnan(item["teeth"]).all() and item["teeth"].shape == (5,)
    # clips preprocessed without region maps give an all-zero mask
    plain = LipSyncDataset(data, ["talk0"], n_frames=5, size=32)[(0, 3)]["mouth"]
    assert plain.shape == (1, 5, 32, 32) and plain.max() == 0


def test_opening_is_measured_from_the_stored_landmarks(tmp_path):
    from lipsync.data.sync_measure import mouth_opening, mouth_width

    landmarks = np.random.default_rng(3).uniform(0, 48, (20, 478, 2)).astype(np.float32)
    frames = np.zeros((20, 48, 48, 3), np.uint8)
    frames[:, 20:] = 235  # white below row 20: wherever the inner-lip ring lies there, teeth
    write_clip(tmp_path, "lm", frames, landmarks=landmarks,
               audio=np.zeros(20 * SR // FPS, np.float32), meta={"identity": "x"})
    item = LipSyncDataset(tmp_path, ["lm"], n_frames=5, size=48)[(0, 2)]
    want = mouth_opening(landmarks[item["start"]:item["start"] + 5])
    np.testing.assert_allclose(item["opening"].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(item["width"].numpy(), mouth_width(landmarks[item["start"]:item["start"] + 5]),
                               rtol=1e-6)
    # "rest": the reference window's most closed mouth
    assert item["rest"] == int(np.argmin(mouth_opening(landmarks[item["ref_start"]:item["ref_start"] + 5])))
    # "geometry": where each target frame's mouth is, for mouth_map generators
    from lipsync.data.sync_measure import mouth_geometry

    np.testing.assert_allclose(item["geometry"].numpy(),
                               mouth_geometry(landmarks[item["start"]:item["start"] + 5], 48), rtol=1e-6)
    # "teeth": how much tooth shows, from the stored frames inside the landmarks' inner lips
    from lipsync.data.sync_measure import mouth_teeth

    run = slice(item["start"], item["start"] + 5)
    np.testing.assert_allclose(item["teeth"].numpy(), mouth_teeth(frames[run], landmarks[run]), rtol=1e-6)
    assert (item["teeth"] > 0).all()
