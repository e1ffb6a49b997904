"""marlin.face.regions: label maps from real landmarks, patch membership, the picture for people."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import face_photo

from marlin.face import (
    N_REGIONS,
    REGIONS,
    FaceDetector,
    colorize_labels,
    marlin_crop,
    overlay,
    patch_regions,
    region_labels,
)

ARTIFACTS = Path(os.environ.get("FACE_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def faces():
    with FaceDetector() as det:
        return {name: det.detect(face_photo(name))[0] for name in ("astronaut", "grace_hopper")}


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_regions_sit_on_the_real_face_parts(faces, name):
    img, face = face_photo(name), faces[name]
    labels = region_labels(face.landmarks, img.shape)
    assert labels.shape == img.shape[:2] and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(N_REGIONS))
    c = {k: centroid(labels == v) for k, v in REGIONS.items() if k != "background"}
    # image layout: subject's right brow+eye on the image left; hair over brows over nose over mouth
    assert c["right_brow_eye"][0] < c["nose"][0] < c["left_brow_eye"][0]
    assert c["hair"][1] < c["right_brow_eye"][1] < c["nose"][1] < c["mouth"][1]
    assert abs(c["mouth"][0] - c["nose"][0]) < 0.1 * face.width
    # the masks follow the photo: lips are redder than skin; eyes/brows darker than skin
    px = img.astype(float)
    redness = px[..., 0] - px[..., 1]
    skin, mouth = labels == REGIONS["skin"], labels == REGIONS["mouth"]
    assert redness[mouth].mean() > redness[skin].mean() + 10
    eyes = (labels == REGIONS["right_brow_eye"]) | (labels == REGIONS["left_brow_eye"])
    assert px[eyes].mean() < px[skin].mean() - 15
    # no region leaks far outside the face box (hair may rise above it)
    x1, y1, x2, y2 = face.box
    ys, xs = np.nonzero((labels > 0) & (labels != REGIONS["hair"]))
    assert xs.min() > x1 - 0.2 * face.width and xs.max() < x2 + 0.2 * face.width
    assert ys.max() < y2 + 0.25 * face.height


def test_no_landmarks_means_all_background():
    assert not region_labels(None, (32, 48)).any()
    with pytest.raises(ValueError, match="landmarks must be"):
        region_labels(np.zeros((10, 2)), (32, 48))


def test_hair_can_be_left_out(faces):
    face = faces["astronaut"]
    with_hair = region_labels(face.landmarks, (512, 512))
    without = region_labels(face.landmarks, (512, 512), hair=False)
    assert (with_hair == REGIONS["hair"]).sum() > 1000 and not (without == REGIONS["hair"]).any()
    assert np.array_equal(with_hair[without > 0], without[without > 0])  # face parts are painted over hair


def synthetic_68() -> np.ndarray:
    """A plausible iBUG-68 face (frontal, 100 px wide) built from simple curves."""
    t = np.linspace(np.pi, 0, 17)
    jaw = np.stack([100 + 50 * np.cos(t), 90 + 60 * np.sin(t)], 1)
    jaw[:, 1] = 90 + 60 * np.sin(np.linspace(0, np.pi, 17))
    jaw[:, 0] = 100 - 50 * np.cos(np.linspace(0, np.pi, 17))
    brow_r = np.stack([np.linspace(62, 92, 5), [72, 68, 67, 68, 70]], 1)
    brow_l = np.stack([np.linspace(108, 138, 5), [70, 68, 67, 68, 72]], 1)
    nose = np.array([[100, 78], [100, 86], [100, 94], [100, 102], [90, 108], [95, 110], [100, 111],
                     [105, 110], [110, 108]], float)
    eye = lambda cx: np.array([[cx - 10, 82], [cx - 5, 79], [cx + 5, 79], [cx + 10, 82], [cx + 5, 85],  # noqa: E731
                               [cx - 5, 85]], float)
    a = np.linspace(np.pi, -np.pi, 13)[:12]
    lips_out = np.stack([100 + 20 * np.cos(a), 126 - 8 * np.sin(a)], 1)
    lips_in = np.stack([100 + 12 * np.cos(a[::3 // 2][:8]), 126 - 3 * np.sin(a[::3 // 2][:8])], 1)
    return np.concatenate([jaw, brow_r, brow_l, nose, eye(78), eye(122), lips_out, lips_in])


def test_68_point_layout():
    lm = synthetic_68()
    assert lm.shape == (68, 2)
    labels = region_labels(lm, (200, 200))
    assert set(np.unique(labels)) == set(range(N_REGIONS))
    c = {k: centroid(labels == v) for k, v in REGIONS.items() if k != "background"}
    assert c["right_brow_eye"][0] < c["nose"][0] < c["left_brow_eye"][0]
    assert c["hair"][1] < c["right_brow_eye"][1] < c["nose"][1] < c["mouth"][1]
    assert labels[126, 100] == REGIONS["mouth"] and labels[100, 100] == REGIONS["nose"]


def test_patch_regions_any_pixel_counts():
    labels = np.zeros((32, 48), np.uint8)
    labels[20, 35] = REGIONS["mouth"]  # one pixel in tile (1, 2)
    labels[:16, :16] = REGIONS["skin"]  # tile (0, 0) entirely skin
    pr = patch_regions(labels, 16)
    assert pr.shape == (2, 3, N_REGIONS) and pr.dtype == bool
    assert pr[1, 2, REGIONS["mouth"]] and pr[1, 2, REGIONS["background"]]
    assert pr[:, :, REGIONS["mouth"]].sum() == 1
    assert pr[0, 0, REGIONS["skin"]] and not pr[0, 0, REGIONS["background"]]


def test_patch_regions_matches_brute_force_with_batch_dims():
    rng = np.random.default_rng(0)
    labels = rng.choice(N_REGIONS, size=(2, 3, 32, 32), p=[0.9, 0.04, 0.01, 0.01, 0.01, 0.01, 0.02])
    pr = patch_regions(labels, 8)
    assert pr.shape == (2, 3, 4, 4, N_REGIONS)
    for b in range(2):
        for t in range(3):
            for i in range(4):
                for j in range(4):
                    tile = labels[b, t, 8 * i: 8 * i + 8, 8 * j: 8 * j + 8]
                    assert np.array_equal(pr[b, t, i, j], np.isin(np.arange(N_REGIONS), tile))
    with pytest.raises(ValueError, match="not divisible"):
        patch_regions(labels[..., :30, :], 8)
    with pytest.raises(ValueError, match="region ids"):
        patch_regions(np.full((16, 16), 9), 16)


def test_regions_in_marlin_crop_give_patch_map(faces):
    """What MARLIN's masking consumes: labels in 224x224 crop coordinates -> 14x14 patch map."""
    img, face = face_photo("grace_hopper"), faces["grace_hopper"]
    crop, cmap = marlin_crop(img, face.box, 224)
    labels = region_labels(cmap.to_crop(face.landmarks), crop.shape)
    pr = patch_regions(labels, 16)
    assert pr.shape == (14, 14, N_REGIONS)
    mouth_rows = np.nonzero(pr[..., REGIONS["mouth"]].any(1))[0]
    eye_rows = np.nonzero(pr[..., REGIONS["right_brow_eye"]].any(1))[0]
    assert mouth_rows.min() > eye_rows.max()


def test_save_overlay_picture(faces):
    """Writes landmarks + region colours over both photos for a person to look at."""
    panels = []
    for name in ("astronaut", "grace_hopper"):
        img, face = face_photo(name), faces[name]
        labels = region_labels(face.landmarks, img.shape)
        crop, cmap = marlin_crop(img, face.box, 256, scale=1.8)
        crop_labels = region_labels(cmap.to_crop(face.landmarks), crop.shape)
        panels.append(np.concatenate([overlay(crop, None, cmap.to_crop(face.landmarks)),
                                      overlay(crop, crop_labels, alpha=0.5),
                                      colorize_labels(crop_labels)], 1))
        assert labels.any()
    picture = np.concatenate(panels, 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "face_regions.png"
    assert cv2.imwrite(str(path), picture[..., ::-1])
    print(f"\nface region picture: {path}")
    assert path.stat().st_size > 10_000
