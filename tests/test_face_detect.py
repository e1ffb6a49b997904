"""marlin.face.detect: mediapipe / haar / fan backends on real face photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from media import face_photo, place

from marlin.face import FAN_WEIGHT_FILES, FaceBackendError, FaceDetector, available_backends


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("name,centre", [("astronaut", (226, 122)), ("grace_hopper", (266, 232))])
def test_mediapipe_finds_the_face_and_its_landmarks(detector, name, centre):
    img = face_photo(name)
    faces = detector.detect(img)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert np.hypot(face.center[0] - centre[0], face.center[1] - centre[1]) < 15
    lm = face.landmarks
    assert lm.shape == (478, 2) and lm.dtype == np.float32
    x1, y1, x2, y2 = face.box
    inside = (lm[:, 0] > x1 - 10) & (lm[:, 0] < x2 + 10) & (lm[:, 1] > y1 - 30) & (lm[:, 1] < y2 + 15)
    assert inside.mean() > 0.95
    # anatomy: the subject's right eye (33) is on the image left; eyes above nose tip (1) above lips
    r_eye, l_eye, nose, upper_lip, chin = lm[33], lm[263], lm[1], lm[13], lm[152]
    assert r_eye[0] < nose[0] < l_eye[0]
    assert max(r_eye[1], l_eye[1]) < nose[1] < upper_lip[1] < chin[1]
    # irises (refined landmarks 468..477) sit between their eye corners
    assert lm[133, 0] > lm[468, 0] > lm[33, 0] and lm[263, 0] > lm[473, 0] > lm[362, 0]


def test_detect_on_a_downscaled_frame_keeps_full_resolution_coordinates():
    img = face_photo("astronaut")
    with FaceDetector(detect_size=0) as full, FaceDetector(detect_size=160) as small:
        a, b = full.detect(img, landmarks=False)[0], small.detect(img, landmarks=False)[0]
    assert a.landmarks is None and b.landmarks is None
    assert np.abs(np.subtract(a.box, b.box)).max() < 0.05 * a.width


def test_video_mode_mesh_agrees_with_static_mode(detector):
    frames = [place(face_photo("astronaut"), (240, 320), (160 + 3 * i, 120), 0.45) for i in range(4)]
    with FaceDetector(video=True) as tracking:
        for frame in frames:
            box = detector.detect(frame, landmarks=False)[0].box
            a, b = detector.landmarks(frame, box), tracking.landmarks(frame, box)
            assert np.abs(a - b).mean() < 2.0


def test_no_face_gives_empty_list(detector):
    assert detector.detect(np.full((120, 160, 3), 90, np.uint8)) == []
    assert detector.landmarks(np.full((120, 160, 3), 90, np.uint8), (40, 30, 100, 90)) is None


def test_haar_boxes_agree_with_mediapipe(detector):
    img = face_photo("grace_hopper")
    with FaceDetector("haar") as haar:
        assert not haar.has_landmarks
        faces = haar.detect(img)
    assert faces and faces[0].landmarks is None
    best = max(iou(f.box, detector.detect(img, landmarks=False)[0].box) for f in faces)
    assert best > 0.5


def test_fan_backend_names_missing_weights_and_folder(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FaceBackendError) as e:
        FaceDetector("fan")
    msg = str(e.value)
    assert all(name in msg for name in FAN_WEIGHT_FILES)
    assert str(tmp_path / "checkpoints") in msg
    if importlib.util.find_spec("face_alignment") is None:
        (tmp_path / "checkpoints").mkdir()
        for name in FAN_WEIGHT_FILES:
            (tmp_path / "checkpoints" / name).write_bytes(b"")
        with pytest.raises(FaceBackendError, match="face-alignment package"):
            FaceDetector("fan")


def test_bad_input_and_lifecycle():
    assert available_backends() == ["mediapipe", "fan", "haar"]
    with pytest.raises(ValueError, match="choose one of"):
        FaceDetector("retinaface")
    det = FaceDetector()
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))
    det.close()
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(face_photo("astronaut"))
    with pytest.raises(ValueError, match="mediapipe model"):
        FaceDetector(model="tiny")


@pytest.mark.parametrize("backend", ["mediapipe", "haar"])
def test_warmup_in_another_thread_leaves_results_unchanged(backend):
    """The dubbing job warms the detector in a thread while it computes the audio features."""
    import threading

    img = face_photo("grace_hopper")
    cold = FaceDetector(backend)
    expected = cold.detect(img)
    cold.close()
    with FaceDetector(backend) as warm:
        thread = threading.Thread(target=warm.warmup)
        thread.start()
        thread.join()
        if backend == "mediapipe":
            assert warm._impl._det is not None and warm._impl._mesh is not None  # models built
        faces = warm.detect(img)
    assert len(faces) == len(expected) == 1
    np.testing.assert_allclose(faces[0].box, expected[0].box, atol=1e-3)
    if backend == "mediapipe":
        np.testing.assert_allclose(faces[0].landmarks, expected[0].landmarks, atol=1e-3)
    closed = FaceDetector(backend)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.warmup()
