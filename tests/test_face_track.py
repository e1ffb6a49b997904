"""marlin.face.track: smoothing, gap bridging, target choice; real faces on known paths."""

from __future__ import annotations

import numpy as np
import pytest
from media import face_photo, place, write_video

from marlin.face import (
    Face,
    FaceDetector,
    FaceTracker,
    TrackConfig,
    iter_marlin_crops,
    marlin_crop,
    select_face,
    smooth_series,
    track,
    track_faces,
    track_video,
)

H, W = 240, 320
PHOTO = face_photo("astronaut")
S0 = 0.5  # photo scale: face box about 52 px


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


def offset(cx, cy, s):
    return np.array([cx - s * PHOTO.shape[1] / 2, cy - s * PHOTO.shape[0] / 2])


@pytest.fixture(scope="module")
def photo_box(detector):
    """The detector's box in photo coordinates, calibrated on a static placement."""
    cx, cy = W / 2, H / 2
    box = np.array(detector.detect(place(PHOTO, (H, W), (cx, cy), S0), landmarks=False)[0].box)
    return np.concatenate([(box[:2] - offset(cx, cy, S0)) / S0, (box[2:] - offset(cx, cy, S0)) / S0])


def expected_box(photo_box, cx, cy, s):
    o = offset(cx, cy, s)
    return np.concatenate([photo_box[:2] * s + o, photo_box[2:] * s + o])


def path(i):  # a drift plus a zoom, slow enough for a 5-frame window
    return W / 2 + 30 * np.sin(i / 9), H / 2 + 12 * np.cos(i / 11), S0 * (1 + 0.2 * i / 24)


def fake_faces(boxes):
    return [[Face(tuple(b), 0.9)] if b is not None else [] for b in boxes]


# ------------------------------------------------------------------ pure parts
def test_smoothing_linear_is_exact_on_lines_and_reduces_noise():
    t = np.arange(30, dtype=float)
    line = np.stack([3 * t + 1, -2 * t], 1)
    assert np.allclose(smooth_series(line, 7, "linear"), line)  # no lag, even at both ends
    assert not np.allclose(smooth_series(line, 7, "mean")[:3], line[:3])  # a mean is biased at the ends
    noise = np.random.default_rng(0).normal(size=(400, 1))
    assert smooth_series(noise, 5, "linear")[2:-2].std() < 0.5 * noise.std()
    valid = np.ones(30, bool)
    valid[10] = False
    y = line.copy()
    y[10] = 1e6  # an invalid frame is neither used nor changed
    out = smooth_series(y, 5, "linear", valid)
    assert out[10, 0] == 1e6 and np.allclose(out[valid], line[valid])


def test_streaming_tracker_equals_batch_smoothing_per_run():
    rng = np.random.default_rng(3)
    n = 40
    centres = np.cumsum(rng.normal(0, 2, size=(n, 2)), 0) + 100
    boxes = np.concatenate([centres - 20, centres + 20], 1)
    present = np.ones(n, bool)
    present[15:25] = False  # a long gap splits the runs
    tracks = track_faces(fake_faces([b if p else None for b, p in zip(boxes, present)]),
                         box_window=5, max_gap=3)
    assert [t.index for t in tracks] == list(range(n))
    assert [t.found for t in tracks] == list(present)
    got = np.array([t.box for t in tracks if t.found])
    assert np.allclose(got, smooth_series(boxes, 5, "linear", present)[present])


def test_short_gaps_are_bridged_long_gaps_are_not():
    boxes = [np.array([10.0 + 4 * i, 20, 50 + 4 * i, 60]) for i in range(20)]
    seen = [None if i in (5, 6, 7) or 11 <= i <= 18 else b for i, b in enumerate(boxes)]
    seen[0] = None  # a short gap at the very start is held from the first detection
    tracks = track_faces(fake_faces(seen), box_window=1, max_gap=3)
    assert [t.found for t in tracks] == [True] * 11 + [False] * 8 + [True]
    assert [t.detected for t in tracks[:9]] == [False, True, True, True, True, False, False, False, True]
    for i in (5, 6, 7):  # linear interpolation across the gap
        assert np.allclose(tracks[i].box, boxes[i])
    assert np.allclose(tracks[0].box, boxes[1])
    assert all(t.box is None and t.landmarks is None for t in tracks[11:19])


def test_trailing_gap_and_landmark_failures():
    lm = np.zeros((478, 2), np.float32)
    faces = [[Face((0, 0, 10, 10), 0.9, lm + i)] for i in range(4)]
    faces += [[Face((0, 0, 10, 10), 0.9, None)]] + [[]] * 2
    tracks = track_faces(faces, max_gap=3, landmark_window=1)
    assert [t.found for t in tracks] == [True] * 7  # frames 4-6 held: landmarks were lost, gap <= 3
    assert not any(t.detected for t in tracks[4:])
    assert np.allclose(tracks[6].landmarks, lm + 3)
    tracks = track_faces(faces, max_gap=2)
    assert [t.found for t in tracks] == [True] * 4 + [False] * 3


def test_select_face_criteria():
    faces = [Face((200, 10, 260, 70), 0.95), Face((10, 10, 90, 90), 0.7), Face((100, 20, 140, 60), 0.8)]
    assert select_face(faces, "largest") == 1
    assert [select_face(faces, i) for i in range(4)] == [1, 2, 0, None]  # left to right
    assert select_face(faces, (230.0, 50.0)) == 0
    assert select_face(faces, "largest", previous=(105, 22, 145, 62)) == 2  # keeps following
    assert select_face(faces, "largest", previous=(300, 200, 340, 240)) is None  # too far
    assert select_face([], "largest") is None
    with pytest.raises(ValueError, match="target"):
        TrackConfig(target="biggest")
    with pytest.raises(ValueError, match="odd"):
        TrackConfig(box_window=4)


# ------------------------------------------------------------------ real faces
def test_tracked_box_follows_a_known_path(detector, photo_box):
    n = 24
    frames = [place(PHOTO, (H, W), path(i)[:2], path(i)[2]) for i in range(n)]
    tracks = list(track(frames, detector))
    assert [t.index for t in tracks] == list(range(n)) and all(t.found and t.detected for t in tracks)
    err = np.array([np.abs(t.box - expected_box(photo_box, *path(i))).max() for i, t in enumerate(tracks)])
    assert err.max() < 4.0 and err.mean() < 3.0, err  # box sides are about 52-62 px
    for t in tracks:
        assert t.landmarks.shape == (478, 2)
        x1, y1, x2, y2 = t.box
        nose = t.landmarks[1]
        assert x1 < nose[0] < x2 and y1 < nose[1] < y2


def test_detecting_every_few_frames_follows_the_mesh(detector, photo_box, monkeypatch):
    n = 16
    frames = [place(PHOTO, (H, W), path(i)[:2], path(i)[2]) for i in range(n)]
    calls = []
    real = detector.detect
    monkeypatch.setattr(detector, "detect", lambda *a, **k: calls.append(1) or real(*a, **k))
    tracks = list(track(frames, detector, detect_every=4))
    assert len(calls) == 4  # frames 0, 4, 8, 12
    err = np.array([np.abs(t.box - expected_box(photo_box, *path(i))).max() for i, t in enumerate(tracks)])
    assert all(t.found and t.detected for t in tracks) and err.max() < 4.0, err


def test_smoothing_reduces_jitter(detector, photo_box):
    n = 30
    rng = np.random.default_rng(7)
    jitter = rng.uniform(-3, 3, size=(n, 2))
    frames = [place(PHOTO, (H, W), np.add(path(i)[:2], jitter[i]), path(i)[2]) for i in range(n)]
    truth = np.array([expected_box(photo_box, *path(i)) for i in range(n)])  # the path without jitter
    raw = np.array([detector.detect(f, landmarks=False)[0].box for f in frames])
    smoothed = np.array([t.box for t in track_faces(fake_faces(raw), box_window=7)])
    # the detector has a steady offset of 1-2 px on this clip; jitter is the spread around it
    raw_jit = (raw - truth).std(0).mean()
    smooth_jit = (smoothed - truth).std(0).mean()
    assert smooth_jit < 0.6 * raw_jit, (raw_jit, smooth_jit)
    smooth_err = np.sqrt(((smoothed - truth) ** 2).mean())
    # frame-to-frame jitter of the box centre drops too
    accel = lambda b: np.abs(np.diff((b[:, :2] + b[:, 2:]) / 2, n=2, axis=0)).mean()  # noqa: E731
    assert accel(smoothed) < 0.5 * accel(raw)
    # Wav2Lip's forward-looking mean of the next 5 boxes lags the moving face: centred does better
    forward = np.array([raw[i: i + 5].mean(0) for i in range(n - 4)])
    fwd_err = np.sqrt(((forward - truth[: n - 4]) ** 2).mean())
    assert smooth_err < fwd_err


def test_blank_frames_pass_as_no_face(detector):
    frames = [place(PHOTO, (H, W), path(i)[:2], path(i)[2]) for i in range(22)]
    blank = np.full((H, W, 3), 40, np.uint8)
    for i in list(range(6, 16)) + [18, 19]:  # a 10-frame gap and a 2-frame gap
        frames[i] = blank
    tracks = list(track(frames, detector, max_gap=4))
    assert [t.found for t in tracks] == [True] * 6 + [False] * 10 + [True] * 6
    assert [t.detected for t in tracks[16:]] == [True, True, False, False, True, True]
    assert all(t.box is None for t in tracks[6:16])
    mid = (tracks[17].box + tracks[20].box) / 2  # bridged frames lie between their neighbours
    assert np.abs((tracks[18].box + tracks[19].box) / 2 - mid).max() < 3


def test_two_faces_the_chosen_one_is_tracked(detector):
    hopper = face_photo("grace_hopper")
    n = 8

    def frame(i):
        canvas = place(PHOTO, (H, 2 * W), (W / 2 + 2 * i, H / 2), 0.55)
        right = place(hopper, (H, 2 * W), (1.5 * W - 2 * i, H / 2 + i), 0.4)
        return np.where(np.arange(2 * W)[None, :, None] >= W, right, canvas).astype(np.uint8)

    frames = [frame(i) for i in range(n)]
    detections = [detector.detect(f, landmarks=False) for f in frames]
    assert all(len(d) == 2 for d in detections)
    for target, side in [(1, "right"), (0, "left"), ((500.0, 100.0), "right"), ((100.0, 50.0), "left"),
                         ("largest", "right")]:  # Grace Hopper's face is the larger one
        tracks = track_faces(detections, target=target)
        centres = [(t.box[0] + t.box[2]) / 2 for t in tracks]
        assert all(t.found for t in tracks)
        assert all((c > W) == (side == "right") for c in centres), (target, centres)
    # the full pipeline (detection + landmarks of the chosen face only)
    tracks = list(track(frames, detector, target=1))
    assert all(t.box[0] > W and t.landmarks[:, 0].min() > W for t in tracks)


def test_track_video_pairs_frames_and_tracks(tmp_path, detector):
    n = 10
    frames = [place(PHOTO, (H // 2, W // 2), (W / 4 + i, H / 4), 0.28) for i in range(n)]
    frames[4] = np.full_like(frames[4], 40)
    path_ = write_video(tmp_path / "clip.mp4", frames, fps=25)
    pairs = list(track_video(path_, detector=detector, max_gap=2))
    assert [f.index for f, _ in pairs] == [t.index for _, t in pairs] == list(range(n))
    assert all(t.found for _, t in pairs) and not pairs[4][1].detected
    tracker = FaceTracker(detector=detector)
    assert tracker.flush() == []
    crops = list(iter_marlin_crops(path_, size=64, detector=detector, max_gap=2))
    assert [c.index for c in crops] == list(range(n))
    for c, (f, t) in zip(crops, pairs):
        assert c.image.shape == (64, 64, 3) and c.time == f.time
        assert np.abs(c.image.astype(float) - marlin_crop(f.image, t.box, 64)[0]).mean() < 3


def test_haar_backend_tracks_boxes_without_landmarks(photo_box):
    frames = [place(PHOTO, (H, W), path(i)[:2], path(i)[2]) for i in range(6)]
    with FaceDetector("haar") as haar:
        tracks = list(track(frames, haar))
    assert all(t.found and t.landmarks is None for t in tracks)
    for i, t in enumerate(tracks):  # Haar boxes differ in size, but sit on the same face
        e = expected_box(photo_box, *path(i))
        assert np.abs((t.box[:2] + t.box[2:]) / 2 - (e[:2] + e[2:]) / 2).max() < 0.25 * (e[2] - e[0])
