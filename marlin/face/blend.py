"""Put a generated face crop back into its frame with a soft, landmark-shaped mask.

The mask is built inside the crop's region only: a landmark polygon (the lower face below the
middle of the nose, or the mouth grown by ``MOUTH_GROW`` of its width), kept ``3 * sigma`` away
from the region's edges and blurred with a Gaussian of ``sigma = feather * region size`` (for the
lower face at most an eighth of the eye-to-nose-tip distance, so the blur never reaches the eyes).
Where the mask is 0 the output pixels are the input pixels, bit for bit, and it reaches 0 before
the crop border, so no box seam can show. Optional colour matching shifts the generated pixels'
Lab mean and spread to the frame's in the feathered band, where a mismatch would be visible.

Given the crop the generator was shown (``given``), the paste also keeps the frame's own fine
detail where the generator left the face as it was.  A generator works on a small crop (96 px for
Wav2Lip): resized back to a face of 200 px its output has lost everything finer than the crop's
pixels, skin texture and sharp lip edges included, even where it copied its input exactly, and a
dub looks soft over the whole lower face (a frequent complaint about Wav2Lip).
The detail the resize lost is ``frame - up(given)``; it is added back in proportion to how little
the generator changed each pixel (``1 - |up(generated) - up(given)| / DETAIL_CHANGE``, smoothed), so
unchanged skin comes back bit-sharp while a mouth the generator redrew does not show the old lips'
edges through it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .crops import CropMap
from .regions import _as_points, _axes, _is_mesh, face_outline, mouth_outline

__all__ = ["BLEND_REGIONS", "DETAIL_CHANGE", "MOUTH_GROW", "blend_mask", "keep_detail", "match_color",
           "paste_back"]

BLEND_REGIONS = ("lower_face", "mouth", "crop")
MOUTH_GROW = 0.35  # the mouth mask is the lip outline grown by this fraction of the mouth width
#: a generator's change (8-bit levels, mean over RGB, at the frame's resolution) at which none of
#: the frame's own fine detail is kept any more: the detail a resize to 96 px loses is a few levels
#: on skin, 10-20 at lip edges, so a redrawn mouth (a change of tens of levels) drops it
DETAIL_CHANGE = 12.0


def _polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    p = np.round((polygon - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(m, [p], 1, lineType=cv2.LINE_8, shift=4)
    return m


def _eyes_and_tip(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if _is_mesh(pts):
        return pts[[33, 133, 362, 263]].mean(axis=0), pts[1]
    return pts[[36, 39, 42, 45]].mean(axis=0), pts[30]


def _lower_face(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Face outline below the line 55% of the way from the eyes to the nose tip."""
    m = _polygon_mask(shape, face_outline(pts))
    _, up, _ = _axes(pts)
    eyes, tip = _eyes_and_tip(pts)
    level = eyes + 0.55 * (tip - eyes)
    ys, xs = np.mgrid[0: shape[0], 0: shape[1]]
    below = (xs + 0.5 - level[0]) * up[0] + (ys + 0.5 - level[1]) * up[1] < 0
    return m * below


def _mouth(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    lips = mouth_outline(pts)
    width = float(np.ptp(lips[:, 0])) or 1.0
    m = _polygon_mask(shape, lips)
    r = max(1, round(MOUTH_GROW * width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(m, kernel)


def blend_mask(crop_map: CropMap, landmarks: np.ndarray | None = None, region: str = "lower_face",
               feather: float = 0.05) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Soft mask for pasting a crop back, over the crop's visible region of the frame.

    Parameters
    ----------
    crop_map : CropMap
    landmarks : np.ndarray, optional
        (478|468|68, 2) in FRAME pixel coordinates. Without them (or with ``region="crop"``)
        the mask is the lower half ellipse of the region ("lower_face", "mouth") or the whole
        region with soft edges ("crop").
    region : str
        One of ``BLEND_REGIONS``.
    feather : float
        Gaussian sigma as a fraction of the region size (sqrt of its area).

    Returns
    -------
    mask : np.ndarray
        (h, w) float32 in [0, 1], exactly 0 on the region border.
    (rows, cols) : tuple of slice
        Where the mask lies in the frame (``CropMap.visible``).
    """
    if region not in BLEND_REGIONS:
        raise ValueError(f"region must be one of {BLEND_REGIONS}, got {region!r}")
    rows, cols = crop_map.visible
    h, w = rows.stop - rows.start, cols.stop - cols.start
    size = math.sqrt((crop_map.x1 - crop_map.x0) * (crop_map.y1 - crop_map.y0))
    sigma = max(1.0, feather * size)
    k = math.ceil(3 * sigma)
    if region == "crop":
        binary = np.ones((h, w), np.uint8)
    elif landmarks is not None:
        pts = _as_points(landmarks) - np.array([cols.start, rows.start], np.float64)
        if region == "lower_face":
            binary = _lower_face((h, w), pts)
            eyes, tip = _eyes_and_tip(pts)  # the blur must not reach the eyes
            sigma = max(1.0, min(sigma, float(np.hypot(*(tip - eyes))) / 8))
            k = math.ceil(3 * sigma)
        else:
            binary = _mouth((h, w), pts)
    else:  # lower half ellipse of the crop region, in frame coordinates
        binary = np.zeros((h, w), np.uint8)
        cx = (crop_map.x0 + crop_map.x1) / 2 - cols.start
        cy = crop_map.y0 + 0.7 * (crop_map.y1 - crop_map.y0) - rows.start
        axes = (0.36 * (crop_map.x1 - crop_map.x0), 0.26 * (crop_map.y1 - crop_map.y0))
        cv2.ellipse(binary, (round(cx * 16), round(cy * 16)), (round(axes[0] * 16), round(axes[1] * 16)),
                    0, 0, 360, 1, -1, lineType=cv2.LINE_8, shift=4)
    margin = k + 1
    binary[:margin] = 0
    binary[-margin:] = 0
    binary[:, :margin] = 0
    binary[:, -margin:] = 0
    if not binary.any():
        return np.zeros((h, w), np.float32), (rows, cols)
    mask = cv2.GaussianBlur(binary.astype(np.float32), (2 * k + 1, 2 * k + 1), sigma,
                            borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-4] = 0.0
    return np.clip(mask, 0.0, 1.0), (rows, cols)


def match_color(source: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shift ``source``'s Lab mean and spread to ``reference``'s under ``weights``.

    ``source``/``reference``: (h, w, 3) uint8 RGB; ``weights``: (h, w) float >= 0. Returns uint8 RGB.
    """
    wsum = float(weights.sum())
    if wsum <= 0:
        return source
    w = (weights / wsum)[..., None]
    src = cv2.cvtColor(source.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    ms, mr = (src * w).sum((0, 1)), (ref * w).sum((0, 1))
    ss = np.sqrt(((src - ms) ** 2 * w).sum((0, 1))) + 1e-3
    sr = np.sqrt(((ref - mr) ** 2 * w).sum((0, 1))) + 1e-3
    out = (src - ms) * np.clip(sr / ss, 0.5, 2.0) + mr
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def keep_detail(patch: np.ndarray, orig: np.ndarray, given: np.ndarray, crop_map: CropMap) -> np.ndarray:
    """``patch`` (the generated crop resized to the frame) with ``orig``'s fine detail put back where
    the generator left ``given`` (the crop it was shown) unchanged; float32 (see the module notes).

    ``patch``, ``orig``: (h, w, 3) over ``crop_map.visible``; ``given``: the crop, its size.
    """
    low, _ = crop_map.uncrop(given)
    low = low.astype(np.float32)
    patch = patch.astype(np.float32)
    change = np.abs(patch - low).mean(axis=-1)
    # smoothed over about a crop pixel, so the weight does not follow the resampling's ripples
    scale = max(1.0, (crop_map.x1 - crop_map.x0) / crop_map.width)
    k = 2 * math.ceil(1.5 * scale) + 1
    change = cv2.GaussianBlur(change, (k, k), scale)
    keep = np.clip(1.0 - change / DETAIL_CHANGE, 0.0, 1.0)[..., None]
    return patch + keep * (orig.astype(np.float32) - low)


def paste_back(frame: np.ndarray, crop: np.ndarray, crop_map: CropMap, landmarks: np.ndarray | None = None,
               *, region: str = "lower_face", feather: float = 0.05, color_match: bool = False,
               given: np.ndarray | None = None,
               return_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Blend a generated crop back into its frame.

    Parameters
    ----------
    frame : np.ndarray
        (H, W, 3) uint8 RGB original frame (not modified).
    crop : np.ndarray
        (crop_map.height, crop_map.width, 3) uint8 RGB generated crop.
    crop_map : CropMap
        From ``wav2lip_crop`` / ``marlin_crop`` on this frame.
    landmarks : np.ndarray, optional
        Frame-coordinate landmarks shaping the mask (see ``blend_mask``).
    region, feather
        See ``blend_mask``.
    color_match : bool
        Match the generated pixels' colour to the frame's around the mask edge first.
    given : np.ndarray, optional
        The crop the generator was shown (``crop``'s size, uint8): keep the frame's fine detail
        where the generator left it unchanged (:func:`keep_detail`). None: paste ``crop`` as it is.
    return_mask : bool
        Also return the (H, W) float32 mask that was used.

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8: a new frame; pixels where the mask is 0 equal ``frame`` exactly.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or crop.dtype != np.uint8 or crop.ndim != 3:
        raise ValueError("frame and crop must be (H, W, 3) uint8 images")
    if frame.shape[:2] != (crop_map.frame_height, crop_map.frame_width):
        raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, crop map is for "
                         f"{crop_map.frame_width}x{crop_map.frame_height}")
    if given is not None and (given.shape != crop.shape or given.dtype != np.uint8):
        raise ValueError(f"given must be the {crop.shape} uint8 crop the generator was shown, "
                         f"got {given.shape} {given.dtype}")
    mask, (rows, cols) = blend_mask(crop_map, landmarks, region, feather)
    patch, _ = crop_map.uncrop(crop)
    out = frame.copy()
    orig = frame[rows, cols]
    if given is not None:
        patch = np.clip(np.round(keep_detail(patch, orig, given, crop_map)), 0, 255).astype(np.uint8)
    if color_match:
        band = 4 * mask * (1 - mask)
        patch = match_color(patch, orig, band if band.sum() > 1 else mask)
    sel = mask > 0
    m = mask[sel][:, None]
    mixed = orig[sel].astype(np.float32) * (1 - m) + patch[sel].astype(np.float32) * m
    region_out = out[rows, cols]
    region_out[sel] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    if not return_mask:
        return out
    full = np.zeros(frame.shape[:2], np.float32)
    full[rows, cols] = mask
    return out, full
