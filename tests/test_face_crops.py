"""marlin.face.crops: Wav2Lip and MARLIN crops and their exact inverse maps."""

from __future__ import annotations

import numpy as np
import pytest
from media import face_photo

from marlin.face import CropMap, crop_region, marlin_crop, marlin_region, wav2lip_crop, wav2lip_region


def dot_frame(h, w, points, radius=0):
    frame = np.zeros((h, w, 3), np.uint8)
    for x, y in points:
        frame[int(y) - radius: int(y) + radius + 1, int(x) - radius: int(x) + radius + 1] = 255
    return frame


def bright_centre(img: np.ndarray) -> np.ndarray:
    w = img[..., 0].astype(float)
    ys, xs = np.mgrid[0: w.shape[0], 0: w.shape[1]]
    return np.array([(xs * w).sum() / w.sum() + 0.5, (ys * w).sum() / w.sum() + 0.5])


def test_marlin_crop_is_a_zero_padded_square_around_the_box():
    frame = np.full((120, 160, 3), 200, np.uint8)
    box = (120.0, 10.0, 150.0, 50.0)  # 30 x 40 near the top-right corner
    crop, cmap = marlin_crop(frame, box, size=224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert (cmap.x1 - cmap.x0) == (cmap.y1 - cmap.y0) == 40  # side = max(w, h)
    assert ((cmap.x0 + cmap.x1) / 2, (cmap.y0 + cmap.y1) / 2) == (135, 30)
    # region x in [115, 155) lies inside; y in [10, 50) inside -> no padding yet
    assert (crop == 200).all()
    crop, cmap = marlin_crop(frame, (140.0, -5.0, 170.0, 35.0), size=112)
    assert (cmap.x0, cmap.y0, cmap.x1, cmap.y1) == (135, -5, 175, 35)
    u_edge = cmap.to_crop([[160.0, 0.0]])[0]  # frame's right and top edges in crop pixels
    m = int(np.ceil(2 * cmap.scale[0]))  # the upscaling kernel reaches 2 source pixels
    assert (crop[:, int(u_edge[0]) + m:] == 0).all() and (crop[: int(u_edge[1]) - m] == 0).all()
    assert (crop[int(u_edge[1]) + m:, : int(u_edge[0]) - m] == 200).all()


def test_marlin_scale_grows_the_square():
    x0, y0, x1, y1 = marlin_region((100, 100, 140, 120), scale=1.5)
    assert x1 - x0 == y1 - y0 == 60 and (x0 + x1) / 2 == 120 and (y0 + y1) / 2 == 110


@pytest.mark.parametrize("size", [48, 224])  # downscale and upscale
def test_maps_are_exact_inverses_and_match_pixels(size):
    rng = np.random.default_rng(1)
    box = (61.3, 47.8, 131.9, 129.2)
    pts = rng.uniform([70, 55], [125, 120], size=(4, 2))
    crop, cmap = marlin_crop(dot_frame(180, 200, pts, radius=1), box, size=size)
    assert np.allclose(cmap.to_frame(cmap.to_crop(pts)), pts, atol=1e-9)
    assert np.allclose(cmap.to_crop(cmap.to_frame(pts)), pts, atol=1e-9)
    u = cmap.to_crop(pts)
    # every dot appears in the crop where the map says (within half a source pixel)
    for (x, y), (cu, cv) in zip(pts, u):
        frame_one = dot_frame(180, 200, [(x, y)], radius=1)
        c, _ = crop_region(frame_one, (cmap.x0, cmap.y0, cmap.x1, cmap.y1), (size, size))
        centre = bright_centre(c)
        true_centre = cmap.to_crop([[int(x) + 0.5, int(y) + 0.5]])[0]
        assert np.abs(centre - true_centre).max() < 0.6 * max(1.0, cmap.scale[0])
        assert np.abs(true_centre - (cu, cv)).max() <= cmap.scale[0]  # dot is drawn at the pixel holding it
    bx = cmap.box_to_crop(box)
    assert bx[0] == pytest.approx((box[0] - cmap.x0) * cmap.scale[0])


def test_uncrop_restores_the_frame_region():
    img = face_photo("astronaut")
    box = (173.7, 67.8, 277.6, 171.7)
    crop, cmap = marlin_crop(img, box, size=104)  # region side 104: crop is a 1:1 copy
    patch, (rows, cols) = cmap.uncrop(crop)
    assert np.array_equal(patch, img[rows, cols])
    crop, cmap = marlin_crop(img, box, size=224)
    patch, (rows, cols) = cmap.uncrop(crop)
    assert patch.shape == img[rows, cols].shape
    assert np.abs(patch.astype(float) - img[rows, cols]).mean() < 2.5
    # a region hanging off the frame only returns its visible part
    crop, cmap = marlin_crop(img, (450.0, 450.0, 530.0, 530.0), size=64)
    patch, (rows, cols) = cmap.uncrop(crop)
    assert (rows, cols) == (slice(450, 512), slice(450, 512)) and patch.shape == (62, 62, 3)
    with pytest.raises(ValueError, match="map expects"):
        cmap.uncrop(crop[:10])


def test_wav2lip_crop_pads_and_clips():
    frame = np.zeros((100, 150, 3), np.uint8)
    box = (40.2, 20.0, 90.0, 80.4)
    assert wav2lip_region(box, frame.shape) == (40, 20, 90, 90)  # default pads: 10 below the chin
    assert wav2lip_region(box, frame.shape, pads=(5, 30, 50, 3)) == (0, 15, 93, 100)  # clipped to frame
    crop, cmap = wav2lip_crop(frame, box, pads=(0, 10, 0, 0), size=96)
    assert crop.shape == (96, 96, 3)
    assert cmap.scale == pytest.approx((96 / 50, 96 / 70))  # aspect ratio not kept, as in Wav2Lip
    p = np.array([[55.5, 60.25]])
    assert np.allclose(cmap.to_frame(cmap.to_crop(p)), p)
    with pytest.raises(ValueError, match="empty"):
        wav2lip_region((200, 10, 260, 50), frame.shape)


def test_crop_region_errors_and_map_fields():
    frame = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="outside"):
        crop_region(frame, (40, 0, 50, 10), (8, 8))
    with pytest.raises(ValueError, match="empty"):
        crop_region(frame, (5, 5, 5, 10), (8, 8))
    _, cmap = crop_region(frame, (-4, -2, 12, 14), (8, 8))
    assert cmap == CropMap(-4, -2, 12, 14, 8, 8, 30, 20)
    assert cmap.visible == (slice(0, 14), slice(0, 12))
