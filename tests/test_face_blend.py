"""marlin.face.blend: soft landmark masks, bit-identical outside, no seam, colour matching."""

from __future__ import annotations

import numpy as np
import pytest
from media import face_photo

from marlin.face import FaceDetector, blend_mask, marlin_crop, match_color, paste_back, wav2lip_crop


@pytest.fixture(scope="module")
def scene():
    img = face_photo("grace_hopper")
    with FaceDetector() as det:
        face = det.detect(img)[0]
    return img, face


def brighter(crop: np.ndarray, amount: int = 60) -> np.ndarray:
    return np.clip(crop.astype(int) + amount, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("region", ["lower_face", "mouth"])
def test_outside_the_mask_is_bit_identical_and_inside_changes(scene, region):
    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box, size=96)
    before = img.copy()
    out, mask = paste_back(img, brighter(crop), cmap, face.landmarks, region=region, return_mask=True)
    assert np.array_equal(img, before)  # input untouched
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], img[mask == 0])
    changed = np.any(out != img, axis=-1)
    assert not changed[mask == 0].any() and changed[mask > 0.5].all()
    lm = face.landmarks
    mouth = lm[13].astype(int)  # upper inner lip
    assert mask[mouth[1], mouth[0]] > 0.99
    (ax, ay), (bx, by) = lm[33], lm[263]  # outer eye corners
    ys, xs = np.nonzero(mask)
    assert (ys > ay + (xs - ax) * (by - ay) / (bx - ax)).all()  # nothing on or above the eye line
    rows, cols = cmap.visible
    border = np.zeros(img.shape[:2], bool)
    border[rows, cols] = True
    border[rows.start + 1: rows.stop - 1, cols.start + 1: cols.stop - 1] = False
    assert not mask[border].any()  # the crop's box edge is never blended: no seam
    if region == "mouth":
        _, lower = paste_back(img, brighter(crop), cmap, lm, region="lower_face", return_mask=True)
        assert (mask > 0.5).sum() < 0.8 * (lower > 0.5).sum()
        assert (lower[mask > 0.5] > 0).mean() > 0.95  # the mouth area lies within the lower face


def test_no_seam_the_change_is_gradual(scene):
    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box, size=96)
    crop = np.clip(crop, 0, 175)  # room to brighten without clipping
    same = paste_back(img, crop, cmap, face.landmarks, feather=0.05)  # resampling only
    out = paste_back(img, crop + np.uint8(80), cmap, face.landmarks, feather=0.05)
    diff = out.astype(float) - same  # = 80 * mask, up to rounding
    step = max(np.abs(np.diff(diff, axis=0)).max(), np.abs(np.diff(diff, axis=1)).max())
    assert diff.max() >= 79 and step < 20  # a hard paste jumps by the full 80 at its edge
    hard_same, hard = img.copy(), img.copy()
    (patch, (rows, cols)), (patch80, _) = cmap.uncrop(crop), cmap.uncrop(crop + np.uint8(80))
    hard_same[rows, cols], hard[rows, cols] = patch, patch80
    hard_diff = hard.astype(float) - hard_same
    assert np.abs(np.diff(hard_diff, axis=1)).max() >= 79


def test_without_landmarks_the_lower_half_of_the_region_is_used(scene):
    img, face = scene
    crop, cmap = marlin_crop(img, face.box, 224)
    mask, (rows, cols) = blend_mask(cmap, None, "lower_face")
    h = rows.stop - rows.start
    ys = np.nonzero(mask.any(1))[0]
    assert ys.min() > 0.25 * h and ys.max() < h - 1
    assert mask.max() > 0.99 and mask.dtype == np.float32
    box_mask, _ = blend_mask(cmap, face.landmarks, "crop")
    assert box_mask[h // 2, box_mask.shape[1] // 2] > 0.99 and box_mask[0].max() == 0


def test_identity_paste_changes_nothing_visible(scene):
    img, face = scene
    side = int(round(max(face.width, face.height)))
    crop, cmap = marlin_crop(img, face.box, size=side)  # 1:1, the crop is the region itself
    out = paste_back(img, crop, cmap, face.landmarks)
    assert np.array_equal(out, img)


def test_color_matching_removes_a_cast(scene):
    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box, size=96)
    cast = crop.astype(int)
    cast[..., 0] += 40
    cast[..., 2] -= 25
    cast = np.clip(cast, 0, 255).astype(np.uint8)
    plain, mask = paste_back(img, cast, cmap, face.landmarks, return_mask=True)
    matched = paste_back(img, cast, cmap, face.landmarks, color_match=True)
    band = (mask > 0.05) & (mask < 0.95)
    err = lambda out: np.abs(out[band].astype(float) - img[band]).mean()  # noqa: E731
    assert err(matched) < 0.5 * err(plain)
    assert np.array_equal(matched[mask == 0], img[mask == 0])


def test_match_color_statistics():
    rng = np.random.default_rng(0)
    ref = rng.integers(60, 200, size=(32, 32, 3)).astype(np.uint8)
    src = np.clip(ref.astype(int) // 2 + 30, 0, 255).astype(np.uint8)
    out = match_color(src, ref, np.ones((32, 32)))
    assert np.abs(out.astype(float).mean((0, 1)) - ref.mean((0, 1))).max() < 3
    assert np.array_equal(match_color(src, ref, np.zeros((32, 32))), src)


def test_bad_inputs(scene):
    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box)
    with pytest.raises(ValueError, match="region must be"):
        paste_back(img, crop, cmap, region="eyes")
    with pytest.raises(ValueError, match="crop map is for"):
        paste_back(img[:100], crop, cmap)
    with pytest.raises(ValueError, match="uint8"):
        paste_back(img, crop.astype(np.float32), cmap)


def test_keep_detail_gives_back_the_frame_where_the_generator_copied(scene):
    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box, size=96)  # a 96 px generator on a larger face
    plain, mask = paste_back(img, crop, cmap, face.landmarks, return_mask=True)
    kept = paste_back(img, crop, cmap, face.landmarks, given=crop)
    inside = mask > 0
    err = lambda out: np.abs(out[inside].astype(float) - img[inside]).mean()  # noqa: E731
    assert err(plain) > 1.5  # the resize to 96 px and back loses the skin's fine detail ...
    assert err(kept) < 0.51  # ... which comes back (up to rounding) where the crop was copied
    assert np.array_equal(kept[mask == 0], img[mask == 0])


def test_keep_detail_leaves_out_the_old_detail_where_the_generator_redrew(scene):
    from marlin.face.blend import keep_detail

    img, face = scene
    crop, cmap = wav2lip_crop(img, face.box, size=96)
    drawn = crop.copy()
    drawn[60:84, 28:68] = (20, 230, 240)  # a flat new mouth, far from any colour of the face
    patch, (rows, cols) = cmap.uncrop(drawn)
    out = keep_detail(patch, img[rows, cols], crop, cmap)
    assert out.dtype == np.float32 and out.shape == patch.shape
    sy, sx = (rows.stop - rows.start) / 96, (cols.stop - cols.start) / 96
    core = (slice(round(64 * sy), round(80 * sy)), slice(round(34 * sx), round(62 * sx)))
    assert np.abs(out[core] - patch[core].astype(np.float32)).max() < 0.01  # exactly the new mouth
    top = (slice(round(8 * sy), round(40 * sy)), slice(round(20 * sx), round(76 * sx)))  # untouched
    assert np.abs(out[top] - img[rows, cols][top]).max() < 0.01
    with pytest.raises(ValueError, match="given must be"):
        paste_back(img, drawn, cmap, given=crop[:48])
