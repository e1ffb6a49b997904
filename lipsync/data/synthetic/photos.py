"""Faces from the public-domain photos that ship inside installed packages.

``astronaut`` comes from scikit-image (``skimage.data.astronaut``), ``grace_hopper`` from
matplotlib's sample data.  Mediapipe landmarks locate the lips, eyes and chin once per photo;
the lips are removed by inpainting and a parametric mouth is drawn there each frame, sized,
tilted and coloured from the original lips; the chin follows the jaw through a smooth warp.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from .faces import PHOTOS, FaceLayer, PhotoIdentity, jaw_field
from .landmarks import LIPS_INNER, LIPS_OUTER, detect_face
from .mouth import EyeStyle, MouthStyle

__all__ = ["PhotoError", "load_photo", "photo_face", "photo_landmarks"]


class PhotoError(RuntimeError):
    """A shipped photo cannot be loaded or its face not found."""


@cache
def load_photo(name: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a shipped photo: ``"astronaut"`` or ``"grace_hopper"`` (read-only)."""
    try:
        if name == "astronaut":
            import skimage.data

            img = skimage.data.astronaut()
        elif name == "grace_hopper":
            import matplotlib.cbook
            from PIL import Image

            with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
                img = np.asarray(im.convert("RGB"))
        else:
            raise PhotoError(f"unknown photo {name!r}; choose one of {PHOTOS}")
    except ImportError as e:
        pkg = "scikit-image" if name == "astronaut" else "matplotlib"
        raise PhotoError(f"photo {name!r} needs the {pkg} package ({e})") from e
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)
    return img


@cache
def photo_landmarks(name: str, flip: bool = False) -> np.ndarray:
    """(478, 2) float32 mediapipe landmarks of the (optionally mirrored) photo, in its pixels."""
    img = load_photo(name)
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    found = detect_face(img)
    if found is None:
        raise PhotoError(f"no face found in photo {name!r} (flip={flip})")
    pts = found.landmarks.copy()
    pts.setflags(write=False)
    return pts


def _median_color(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sel = img[mask > 0]
    return np.median(sel, 0) if len(sel) else np.array([160.0, 90.0, 90.0])


def _fill_skin(img: np.ndarray, erase: np.ndarray, hw: float, name: str) -> np.ndarray:
    """Inpaint ``erase`` smoothly, then add the skin grain (high-frequency level) of the ring around it."""
    smooth = cv2.inpaint(img, erase, max(3, int(0.1 * hw)), cv2.INPAINT_TELEA).astype(np.float32)
    m = erase.astype(np.float32)[..., None] / 255.0
    smooth = cv2.GaussianBlur(smooth, (0, 0), 0.12 * hw) * m + smooth * (1 - m)
    ring = cv2.subtract(cv2.dilate(erase, np.ones((int(0.5 * hw) | 1,) * 2, np.uint8)), erase) > 0
    f = img.astype(np.float32)
    grain = (f - cv2.GaussianBlur(f, (0, 0), 1.5))[ring]
    std = grain.std(0) if len(grain) else np.zeros(3, np.float32)
    rng = np.random.default_rng(list(name.encode()))
    noise = cv2.GaussianBlur(rng.standard_normal(img.shape[:2]).astype(np.float32), (0, 0), 0.8)
    noise *= 1.0 / max(float(noise.std()), 1e-6)
    out = smooth + m * noise[..., None] * std
    return np.clip(out, 0, 255).astype(np.uint8)


def _eye(lm: np.ndarray, corners: tuple[int, int], top: int, bottom: int, img: np.ndarray) -> EyeStyle:
    a, b = lm[corners[0]], lm[corners[1]]
    c = (a + b) / 2
    d = b - a
    roll = float(np.arctan2(d[1], d[0]))
    if abs(roll) > np.pi / 2:
        roll -= np.sign(roll) * np.pi
    normal = np.array([-np.sin(roll), np.cos(roll)])
    up = max(float(-(lm[top] - c) @ normal), 1.0)
    down = max(float((lm[bottom] - c) @ normal), 1.0)
    hw = float(np.linalg.norm(d) / 2)
    probe = c - normal * (up * 2.2)  # skin between the eye and the brow
    r = max(int(hw * 0.25), 1)
    y, x = int(probe[1]), int(probe[0])
    patch = img[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].reshape(-1, 3)
    lid = np.median(patch, 0) if len(patch) else np.array([180.0, 140.0, 120.0])
    return EyeStyle((float(c[0]), float(c[1])), hw, up, down, tuple(int(v) for v in lid * 0.95), roll=roll)


def photo_face(ident: PhotoIdentity, size: tuple[int, int], scale: int) -> FaceLayer:
    """Build the still layer of a photo identity for output ``size`` = (height, width)."""
    src = load_photo(ident.photo)
    if ident.flip:
        src = src[:, ::-1]
    lm0 = photo_landmarks(ident.photo, ident.flip)
    h, w = size[0] * scale, size[1] * scale
    top, chin = lm0[10], lm0[152]
    k = ident.face_size * h / float(np.linalg.norm(chin - top))
    center = (top + chin) / 2
    t = np.array([w / 2, h * 0.48]) - k * center
    m = np.array([[k, 0, t[0]], [0, k, t[1]]], np.float64)
    img = cv2.warpAffine(
        np.ascontiguousarray(src),
        m,
        (w, h),
        flags=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT101,
    )
    img = np.clip(img.astype(np.float32) * np.asarray(ident.tint, np.float32), 0, 255).astype(np.uint8)
    lm = lm0 * k + t

    outer = np.round(lm[list(LIPS_OUTER)]).astype(np.int32)
    inner = np.round(lm[list(LIPS_INNER)]).astype(np.int32)
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [cv2.convexHull(outer)], 255)
    inside = np.zeros_like(lips)
    cv2.fillPoly(inside, [inner], 255)
    lip_color = _median_color(img, cv2.subtract(lips, inside))
    lip_color = np.clip(
        (lip_color - lip_color.mean()) * 1.2 + lip_color.mean(), 0, 255
    )  # a bit more saturated
    corner_l, corner_r = lm[61], lm[291]
    hw = float(np.linalg.norm(corner_r - corner_l) / 2)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.35 * hw) | 1, int(0.35 * hw) | 1))
    erase = cv2.dilate(lips, kernel)
    img = _fill_skin(img, erase, hw, ident.photo)

    d = corner_r - corner_l
    roll = float(np.arctan2(d[1], d[0]))
    lip_line = (lm[13] + lm[14]) / 2
    mid = (corner_l + corner_r) / 2
    center = (float(mid[0]), float(min(lip_line[1], mid[1] + 0.15 * hw)))
    upper = float(np.clip(np.linalg.norm(lm[0] - lm[13]), 0.18 * hw, 0.32 * hw))
    lower = float(np.clip(np.linalg.norm(lm[17] - lm[14]), 0.22 * hw, 0.4 * hw))
    mouth = MouthStyle(center, 0.92 * hw, upper, lower, tuple(int(v) for v in lip_color), roll=roll)
    eyes = (_eye(lm, (33, 133), 159, 145, img), _eye(lm, (362, 263), 386, 374, img))
    jaw_half = float(abs(lm[397][0] - lm[172][0]) / 2)
    jaw_box, field = jaw_field((h, w), center[1], float(lm[152][1]), center[0], jaw_half)
    x1, y1 = lm.min(0)
    x2, y2 = lm.max(0)
    if ident.glasses != "none":
        from .drawing import Canvas, draw_glasses

        unit = ident.face_size * h
        cv = Canvas(h, w, (w / 2, h * 0.48), unit)
        cv.rgb = img.astype(np.float32)
        eyes_u = [
            ((e.center[0] - w / 2) / unit, (e.center[1] - h * 0.48) / unit, e.half_width * 1.15 / unit)
            for e in eyes
        ]
        draw_glasses(cv, ident, eyes_u)
        img = np.clip(cv.rgb, 0, 255).astype(np.uint8)
    return FaceLayer(
        img,
        None,
        None,
        scale,
        mouth,
        eyes,
        (float(x1), float(y1), float(x2), float(y2)),
        (float((x1 + x2) / 2), float((y1 + y2) / 2)),
        jaw_box,
        field,
    )
