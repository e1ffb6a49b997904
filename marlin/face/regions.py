"""Facial region label maps from landmarks, and which regions each patch touches.

The groups are those MARLIN's region-guided masking uses (REFERENCE.md section 1), with ids:

====  ==================  ==================================================================
 id   name                pixels
====  ==================  ==================================================================
 0    background          everything else (neck, clothes, scene)
 1    skin                inside the face outline, not in another face part
 2    right_brow_eye      the subject's right eyebrow and right eye opening (image left)
 3    left_brow_eye       the subject's left eyebrow and left eye opening (image right)
 4    nose                hull of the nose landmarks, from the bridge to the nostril wings
 5    mouth               inside the outer lip contour (both lips and the inner mouth)
 6    hair                approximation, see below
====  ==================  ==================================================================

Hair is not visible to landmarks, so it is approximated geometrically: the face outline is
enlarged about its centre (1.35x across, 1.7x up along the face's own vertical axis), and the
part of that enlarged outline which lies outside the face and above the eyes is labelled hair.
This gives a cap over the forehead and the temples that follows head size, position and roll;
it ignores the actual hair style (bald heads get a hair band, long hair below the eyes is missed).

Two landmark layouts are understood: the mediapipe face mesh (478 points, or 468 without the
iris refinement) and the iBUG 68-point layout (fan backend). The 68-point layout has no forehead
points, so its outline is closed by the eyebrows lifted by a quarter of the brow-to-chin height.
Landmarks are (N, 2) float x, y in continuous pixel coordinates (pixel i covers [i, i + 1)).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "N_REGIONS",
    "REGIONS",
    "REGION_COLORS",
    "colorize_labels",
    "face_outline",
    "mouth_outline",
    "overlay",
    "patch_regions",
    "region_labels",
    "region_polygons",
]

REGIONS: dict[str, int] = {
    "background": 0, "skin": 1, "right_brow_eye": 2, "left_brow_eye": 3, "nose": 4, "mouth": 5, "hair": 6,
}
N_REGIONS = len(REGIONS)
REGION_COLORS = np.array([(0, 0, 0), (230, 190, 150), (40, 120, 255), (0, 220, 255), (250, 60, 200),
                          (230, 30, 30), (120, 70, 20)], np.uint8)  # RGB per id, for pictures

# --- mediapipe face mesh topology (index loops from the mesh's published connection sets)
_MP_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
            152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
_MP_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_MP_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_MP_RIGHT_BROW = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
_MP_LEFT_BROW = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
_MP_NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 97, 326, 327, 64, 48, 115, 220, 45, 275, 440, 344,
            278, 294, 193, 417)
_MP_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
_MP_CHIN, _MP_FOREHEAD = 152, 10

# --- iBUG 68 layout
_IB_JAW = tuple(range(0, 17))
_IB_RIGHT_BROW, _IB_LEFT_BROW = tuple(range(17, 22)), tuple(range(22, 27))
_IB_NOSE = tuple(range(27, 36))
_IB_RIGHT_EYE, _IB_LEFT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
_IB_LIPS = tuple(range(48, 60))
_IB_CHIN = 8


def _as_points(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2 or pts.shape[0] not in (468, 478, 68):
        raise ValueError(f"landmarks must be (478|468|68, 2) x, y points, got shape {pts.shape}")
    return pts[:, :2]


def _is_mesh(pts: np.ndarray) -> bool:
    return pts.shape[0] != 68


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """Closed face outline (K, 2): jaw, cheeks and forehead (see module notes for 68 points)."""
    pts = _as_points(landmarks)
    if _is_mesh(pts):
        return pts[list(_MP_OVAL)]
    jaw = pts[list(_IB_JAW)]
    brows = pts[list(_IB_RIGHT_BROW + _IB_LEFT_BROW)][::-1]  # left brow outer -> right brow outer
    lift = pts[_IB_CHIN] - brows.mean(axis=0)
    return np.concatenate([jaw, brows - 0.25 * lift])


def mouth_outline(landmarks: np.ndarray) -> np.ndarray:
    """Outer lip contour (K, 2), closed."""
    pts = _as_points(landmarks)
    return pts[list(_MP_LIPS if _is_mesh(pts) else _IB_LIPS)]


def _axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Face centre, unit "up" vector (chin -> forehead) and face height in pixels."""
    outline = face_outline(pts)
    chin = pts[_MP_CHIN if _is_mesh(pts) else _IB_CHIN]
    top = pts[_MP_FOREHEAD] if _is_mesh(pts) else outline[17:].mean(axis=0)
    up = top - chin
    height = float(np.hypot(*up)) or 1.0
    return outline.mean(axis=0), up / height, height


def _hair_polygon(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Enlarged outline used for hair, plus the eye level (point, up vector) that bounds it below."""
    outline = face_outline(pts)
    centre, up, _ = _axes(pts)
    right = np.array([-up[1], up[0]])
    rel = outline - centre
    a, b = rel @ right, rel @ up
    b = np.where(b > 0, b * 1.7, b * 1.1)
    enlarged = centre + np.outer(a * 1.35, right) + np.outer(b, up)
    eye_idx = _MP_RIGHT_EYE + _MP_LEFT_EYE if _is_mesh(pts) else _IB_RIGHT_EYE + _IB_LEFT_EYE
    eyes = pts[list(eye_idx)]
    return enlarged, eyes.mean(axis=0), float(np.linalg.norm(up))


def region_polygons(landmarks: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Polygons (each (K, 2) float, x, y) per region name, in painting order (later wins)."""
    pts = _as_points(landmarks)
    if _is_mesh(pts):
        right = [pts[list(_MP_RIGHT_BROW)], pts[list(_MP_RIGHT_EYE)]]
        left = [pts[list(_MP_LEFT_BROW)], pts[list(_MP_LEFT_EYE)]]
        nose = [_hull(pts[list(_MP_NOSE)])]
    else:
        right = [pts[list(_IB_RIGHT_BROW)], pts[list(_IB_RIGHT_EYE)]]
        left = [pts[list(_IB_LEFT_BROW)], pts[list(_IB_LEFT_EYE)]]
        nose = [_hull(pts[list(_IB_NOSE)])]
    return {"skin": [face_outline(pts)], "nose": nose, "right_brow_eye": right, "left_brow_eye": left,
            "mouth": [mouth_outline(pts)]}


def _fill(canvas: np.ndarray, polygon: np.ndarray, value: int) -> None:
    shift = 4  # 1/16 pixel precision; OpenCV puts pixel centres at integers, hence the -0.5
    p = np.round((polygon - 0.5) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(canvas, [p], int(value), lineType=cv2.LINE_8, shift=shift)


def region_labels(landmarks: np.ndarray | None, shape: tuple[int, ...], hair: bool = True) -> np.ndarray:
    """Per-pixel region ids (see ``REGIONS``) for one face.

    Parameters
    ----------
    landmarks : np.ndarray or None
        (478|468|68, 2) x, y in the pixel coordinates of the target image; ``None`` gives an
        all-background map.
    shape : tuple
        (H, W) or (H, W, C) of the target image.
    hair : bool
        Include the geometric hair approximation.

    Returns
    -------
    np.ndarray
        (H, W) uint8 in [0, 6].
    """
    h, w = int(shape[0]), int(shape[1])
    labels = np.zeros((h, w), np.uint8)
    if landmarks is None:
        return labels
    pts = _as_points(landmarks)
    if hair:
        enlarged, eye_point, _ = _hair_polygon(pts)
        cap = np.zeros_like(labels)
        _fill(cap, enlarged, 1)
        _, up, height = _axes(pts)
        ys, xs = np.mgrid[0:h, 0:w]
        level = (xs + 0.5 - eye_point[0]) * up[0] + (ys + 0.5 - eye_point[1]) * up[1]
        labels[(cap > 0) & (level > 0.05 * height)] = REGIONS["hair"]
    for name, polygons in region_polygons(pts).items():
        for polygon in polygons:
            _fill(labels, polygon, REGIONS[name])
    return labels


def patch_regions(labels: np.ndarray, patch: int = 16) -> np.ndarray:
    """Which regions each ``patch`` x ``patch`` tile touches (any pixel counts).

    Parameters
    ----------
    labels : np.ndarray
        (..., H, W) integer region ids; H and W must be multiples of ``patch``.
    patch : int

    Returns
    -------
    np.ndarray
        (..., H // patch, W // patch, N_REGIONS) bool; ``[..., i, j, r]`` is True when tile
        (i, j) contains at least one pixel of region ``r``.
    """
    labels = np.asarray(labels)
    *lead, h, w = labels.shape
    if patch <= 0 or h % patch or w % patch:
        raise ValueError(f"label map {h}x{w} is not divisible into {patch}x{patch} patches")
    if labels.size and (labels.min() < 0 or labels.max() >= N_REGIONS):
        raise ValueError(f"labels must be region ids in [0, {N_REGIONS - 1}]")
    tiles = labels.reshape(*lead, h // patch, patch, w // patch, patch)
    onehot = tiles[..., None] == np.arange(N_REGIONS, dtype=labels.dtype)
    return onehot.any(axis=(-4, -2))


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    return REGION_COLORS.copy()


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) region ids -> (H, W, 3) uint8 RGB picture using ``REGION_COLORS``."""
    return _palette()[np.asarray(labels)]


def overlay(rgb: np.ndarray, labels: np.ndarray | None = None, landmarks: np.ndarray | None = None,
            alpha: float = 0.45) -> np.ndarray:
    """Picture for people: region colours blended over ``rgb`` and landmarks drawn as dots."""
    out = np.array(rgb, np.uint8, copy=True)
    if labels is not None:
        colour = colorize_labels(labels).astype(np.float32)
        face = labels > 0
        out[face] = np.round((1 - alpha) * out[face] + alpha * colour[face]).astype(np.uint8)
    if landmarks is not None:
        radius = max(1, round(min(out.shape[:2]) / 400))
        for x, y in np.asarray(landmarks)[:, :2]:
            cv2.circle(out, (int(x), int(y)), radius, (0, 255, 0), -1, lineType=cv2.LINE_AA)
    return out
