"""Draw a ``DrawnIdentity`` as an antialiased, softly shaded still face layer (mouth left out).

Everything is drawn at ``scale`` x the output resolution in face units (1 = forehead to chin,
origin at the face centre), composited in float32 over local patches, with Gaussian-blurred
masks for shading (face rim, eye sockets, nose, blush, chin shadow).
"""

from __future__ import annotations

import cv2
import numpy as np

from .faces import DrawnIdentity, FaceLayer, jaw_field
from .mouth import EyeStyle, MouthStyle

__all__ = ["Canvas", "draw_face", "draw_background", "draw_glasses"]

_SHIFT = 4


class Canvas:
    """RGB float canvas plus coverage alpha, painted in face units."""

    def __init__(self, h: int, w: int, center: tuple[float, float], unit: float):
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.float32)
        self.c = np.asarray(center, np.float64)
        self.unit = unit

    def px(self, pts) -> np.ndarray:
        return np.asarray(pts, np.float64) * self.unit + self.c

    def _box(self, p: np.ndarray, margin: float):
        h, w = self.alpha.shape
        x1, y1 = np.floor(p.min(0) - margin).astype(int)
        x2, y2 = np.ceil(p.max(0) + margin).astype(int) + 1
        return max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)

    def _blend(self, p, mask_fn, color, alpha, blur, cover):
        margin = 3 * blur * self.unit + 2
        x1, y1, x2, y2 = self._box(p, margin)
        if x2 <= x1 or y2 <= y1:
            return None
        mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
        mask_fn(mask, np.round((p - [x1, y1]) * (1 << _SHIFT)).astype(np.int32))
        m = mask.astype(np.float32) * (alpha / 255.0)
        if blur > 0:
            m = cv2.GaussianBlur(m, (0, 0), blur * self.unit)
        if callable(color):
            color = color(x1, y1, x2, y2)
        rgb = self.rgb[y1:y2, x1:x2]
        rgb *= 1 - m[..., None]
        rgb += m[..., None] * np.asarray(color, np.float32)
        if cover:
            a = self.alpha[y1:y2, x1:x2]
            np.maximum(a, m, out=a)
        return m

    def fill(self, pts, color, alpha=1.0, blur=0.0, cover=True):
        p = self.px(pts)
        return self._blend(
            p, lambda m, q: cv2.fillPoly(m, [q], 255, cv2.LINE_AA, shift=_SHIFT), color, alpha, blur, cover
        )

    def line(self, pts, color, width, alpha=1.0, blur=0.0):
        p = self.px(pts)
        t = max(1, int(round(width * self.unit)))
        self._blend(
            p,
            lambda m, q: cv2.polylines(m, [q], False, 255, t, cv2.LINE_AA, shift=_SHIFT),
            color,
            alpha,
            blur,
            False,
        )


def _ellipse(cx, cy, a, b, n=64, t0=0.0, t1=2 * np.pi):
    t = np.linspace(t0, t1, n)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)


def _outline(ident: DrawnIdentity, n: int = 120) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    y = np.sin(t)
    taper = np.where(y > 0, 1 - (1 - ident.jaw) * y**2, 1 - 0.08 * y**2)
    return np.stack([ident.face_width * np.cos(t) * taper, 0.5 * y], 1)


def draw_background(kind: str, colors, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A static background (H, W, 3) uint8 of ``kind`` in BACKGROUNDS, from two colours."""
    h, w = shape
    sh, sw = max(h // 8, 4), max(w // 8, 4)
    c0, c1 = (np.asarray(c, np.float32) for c in colors)
    if kind == "gradient":
        t = np.linspace(0, 1, sh, dtype=np.float32)[:, None, None]
        small = np.broadcast_to(c0 * (1 - t) + c1 * t, (sh, sw, 3)).copy()
    elif kind == "blobs":
        small = np.empty((sh, sw, 3), np.float32)
        small[:] = c0
        for _ in range(10):
            col = c0 + (c1 - c0) * rng.uniform(0, 1)
            cv2.circle(
                small,
                (int(rng.uniform(0, sw)), int(rng.uniform(0, sh))),
                int(rng.uniform(2, sw / 3)),
                col.tolist(),
                -1,
                cv2.LINE_AA,
            )
        small = cv2.GaussianBlur(small, (0, 0), sw / 25)
    elif kind == "stripes":
        period = rng.uniform(sw / 6, sw / 3)
        t = (np.sin(2 * np.pi * np.arange(sw) / period) > 0).astype(np.float32)[None, :, None]
        small = np.broadcast_to(c0 * (1 - t) + c1 * t, (sh, sw, 3)).copy()
        small = cv2.GaussianBlur(small, (0, 0), 0.6)
    else:
        small = np.broadcast_to(c0, (sh, sw, 3)).copy()
    small += rng.normal(0, 4, (sh, sw, 1)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _hair(cv: Canvas, ident: DrawnIdentity, color: np.ndarray) -> None:
    fw = ident.face_width
    style, fringe = ident.hair_style, ident.fringe
    if style == "bald":
        cv.fill(_ellipse(-0.08, -0.36, 0.1, 0.05), np.minimum(np.asarray(ident.skin) * 1.12, 255), 0.3, 0.04)
        return
    rx, ry, top_y = fw + 0.04, 0.45, -0.1
    cap = _ellipse(0, top_y, rx, ry, 48, np.pi, 2 * np.pi)  # left temple -> over the top -> right temple
    low = {"long": 0.32, "bob": 0.16, "curly": 0.02}.get(style, -0.1)
    side = [[fw + 0.045, low], [fw - 0.025, low], [fw - 0.02, -0.14]]
    hairline = {
        "none": [[0.2, -0.3], [0.0, -0.34], [-0.2, -0.3]],
        "side": [[0.22, -0.26], [0.05, -0.31], [-0.08, -0.24], [-0.25, -0.2]],
        "bangs": [[0.26, -0.19], [0.0, -0.2], [-0.26, -0.19]],
        "swept": [[0.25, -0.3], [0.0, -0.25], [-0.22, -0.17]],
    }[fringe]
    left = [[-x, y] for x, y in side[::-1]]
    pts = np.concatenate([cap, side, hairline, left])
    if style == "curly":
        for t in np.linspace(np.pi * 0.95, np.pi * 2.05, 14):
            cv.fill(_ellipse(rx * np.cos(t), top_y + ry * np.sin(t), 0.06, 0.06, 24), color * 0.92)
    cv.fill(pts, lambda x1, y1, x2, y2: _shaded(color, x1, y1, x2, y2, cv))
    for k in range(7):  # a few lighter strands for texture
        x0 = -0.2 + 0.07 * k
        cv.line(
            [[x0, -0.5], [x0 + 0.05, -0.42], [x0 + 0.06, -0.33]],
            np.minimum(color * 1.3 + 15, 255),
            0.006,
            0.35,
        )


def _shaded(color: np.ndarray, x1: int, y1: int, x2: int, y2: int, cv: Canvas) -> np.ndarray:
    ys = (np.arange(y1, y2, dtype=np.float32)[:, None, None] - cv.c[1]) / cv.unit
    return color * (1.05 - 0.25 * np.clip(ys + 0.5, 0, 1))


def draw_glasses(cv: Canvas, ident, eyes) -> None:
    """Glasses frames over the eyes (``eyes`` as (x, y, half_width) in face units)."""
    col = np.asarray(ident.glasses_color, np.float32)
    for ex, ey, ew in eyes:
        if ident.glasses == "round":
            ring = _ellipse(ex, ey + 0.005, 1.55 * ew, 1.35 * ew, 48)
        else:
            a, b = 1.75 * ew, 1.2 * ew
            ring = np.array(
                [[ex - a, ey - b], [ex + a, ey - b], [ex + a * 0.95, ey + b], [ex - a * 0.95, ey + b]]
            )
            ring = np.concatenate([ring, ring[:1]])
        cv.fill(ring, (200, 215, 230), 0.08, cover=False)
        cv.line(ring, col, 0.009)
    (lx, ly, lw), (rx, ry, rw) = sorted(eyes)
    cv.line([[lx + 1.5 * lw, ly - 0.01], [0, ly - 0.025], [rx - 1.5 * rw, ry - 0.01]], col, 0.008)


def draw_face(ident: DrawnIdentity, size: tuple[int, int], scale: int) -> FaceLayer:
    """Build the still layer of a drawn identity for output ``size`` = (height, width)."""
    h, w = size[0] * scale, size[1] * scale
    unit = ident.face_size * h
    cv = Canvas(h, w, (w * (0.5 + ident.offset_x), h * 0.48), unit)
    skin = np.asarray(ident.skin, np.float32)
    hair = np.asarray(ident.hair_color, np.float32)
    rng = np.random.default_rng([*ident.skin, *ident.background_colors[0], *ident.background_colors[1]])
    fw = ident.face_width

    # body: shoulders, neck, shadow under the chin, hair falling behind
    cv.fill(_ellipse(0, 1.0, 0.78, 0.42), lambda *b: _shaded(np.asarray(ident.clothes, np.float32), *b, cv))
    cv.fill([[-0.15, 0.2], [0.15, 0.2], [0.17, 0.74], [-0.17, 0.74]], skin * 0.86)
    cv.fill(_ellipse(0, 0.5, 0.2, 0.1), skin * 0.55, 0.45, 0.04, cover=False)
    if ident.hair_style in ("long", "bob"):
        bottom = 0.58 if ident.hair_style == "long" else 0.3
        back = np.concatenate(
            [
                _ellipse(0, -0.08, fw + 0.08, 0.5, 40, np.pi, 2 * np.pi),
                [[fw + 0.09, bottom], [-fw - 0.09, bottom]],
            ]
        )
        cv.fill(back, hair * 0.7, blur=0.004)
    for s in (-1, 1):  # ears
        cv.fill(_ellipse(s * (fw - 0.005), 0.0, 0.05, 0.085), skin * 0.9)
        cv.fill(_ellipse(s * (fw + 0.005), 0.0, 0.02, 0.05), skin * 0.7, 0.5, 0.01, cover=False)

    # face with soft rim shading and a horizontal light direction
    outline = _outline(ident)

    def face_color(x1, y1, x2, y2):
        xs = (np.arange(x1, x2, dtype=np.float32)[None, :, None] - cv.c[0]) / (fw * unit)
        return skin * (1.0 + 0.07 * ident.light * xs)

    cv.fill(outline, face_color)
    p = cv.px(outline)
    x1, y1, x2, y2 = cv._box(p, 3 * 0.06 * unit + 2)
    m = np.zeros((y2 - y1, x2 - x1), np.uint8)
    cv2.fillPoly(m, [np.round((p - [x1, y1]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    m = m.astype(np.float32) / 255.0
    rim = 1.0 - cv2.GaussianBlur(m, (0, 0), 0.06 * unit)
    cv.rgb[y1:y2, x1:x2] *= (1.0 - 0.3 * rim * m)[..., None]

    for s in (-1, 1):  # blush, eye sockets
        cv.fill(_ellipse(s * 0.19, 0.1, 0.07, 0.045), skin * [1.05, 0.75, 0.75], 0.18, 0.04, cover=False)
        cv.fill(
            _ellipse(s * ident.eye_spacing, ident.eye_y - 0.005, 1.5 * ident.eye_size, 0.045),
            skin * 0.7,
            0.3,
            0.025,
            cover=False,
        )
    if ident.beard > 0:
        jaw = np.concatenate(
            [_ellipse(0, 0.1, fw * 0.95, 0.4, 40, 0.05, np.pi - 0.05), [[-0.2, 0.12], [0.2, 0.12]]]
        )
        stubble = np.minimum(hair * 0.8, skin * 0.6)  # never lighter than the skin
        cv.fill(jaw, stubble, 0.4 * ident.beard, 0.035, cover=False)

    # nose
    ny = ident.eye_y + ident.nose_length + 0.02
    nw = ident.nose_width
    side = 1 if ident.light < 0 else -1
    cv.line(
        [[side * 0.02, ident.eye_y + 0.02], [side * 0.028, ny - 0.04], [side * nw * 1.1, ny - 0.005]],
        skin * 0.6,
        0.012,
        0.5,
        0.01,
    )
    cv.fill(_ellipse(0, ny - 0.02, nw * 0.7, 0.025), np.minimum(skin * 1.12, 255), 0.35, 0.012, cover=False)
    cv.fill(_ellipse(0, ny + 0.018, nw * 1.3, 0.015), skin * 0.55, 0.35, 0.012, cover=False)
    for s in (-1, 1):
        cv.fill(_ellipse(s * nw * 0.55, ny + 0.004, 0.012, 0.0075, 24), skin * 0.35, 0.85)
        cv.line(
            _ellipse(
                s * nw * 0.95, ny - 0.008, 0.015, 0.018, 16, np.pi * 0.5 - s * 1.2, np.pi * 0.5 + s * 1.2
            ),
            skin * 0.6,
            0.006,
            0.6,
            0.003,
        )
    my = ident.mouth_y
    cv.line([[0, ny + 0.035], [0, my - ident.lip_upper - 0.005]], skin * 0.8, 0.02, 0.25, 0.01)  # philtrum

    # eyes: sclera, iris, pupil, highlight, lash line, crease; brows
    eyes, eye_styles = [], []
    for s in (-1, 1):
        ex, ey, ew = s * ident.eye_spacing, ident.eye_y, ident.eye_size
        up, lo = 0.46 * ew, 0.34 * ew
        almond = np.concatenate(
            [_ellipse(ex, ey, ew, up, 32, np.pi, 2 * np.pi), _ellipse(ex, ey, ew, lo, 32, 0, np.pi)]
        )
        pa = cv.px(almond)
        bx1, by1, bx2, by2 = cv._box(pa, 3)
        before = cv.rgb[by1:by2, bx1:bx2].copy()
        cv.fill(almond, (236, 232, 226))
        cv.fill(_ellipse(ex, ey - 0.1 * up, 0.5 * ew, 0.5 * ew, 40), ident.iris)
        cv.fill(_ellipse(ex, ey - 0.1 * up, 0.22 * ew, 0.22 * ew, 24), (12, 10, 10))
        cv.fill(_ellipse(ex + 0.15 * ew, ey - 0.3 * up, 0.08 * ew, 0.08 * ew, 16), (250, 250, 250), 0.9)
        mask = np.zeros((by2 - by1, bx2 - bx1), np.uint8)
        cv2.fillPoly(mask, [np.round((pa - [bx1, by1]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        mk = mask.astype(np.float32)[..., None] / 255.0
        cv.rgb[by1:by2, bx1:bx2] = cv.rgb[by1:by2, bx1:bx2] * mk + before * (1 - mk)
        cv.line(_ellipse(ex, ey, ew * 1.02, up * 1.05, 32, np.pi * 1.02, np.pi * 1.98), (25, 18, 16), 0.012)
        cv.line(_ellipse(ex, ey, ew * 0.95, lo, 24, 0.15, np.pi - 0.15), skin * 0.6, 0.005, 0.5)
        cv.line(
            _ellipse(ex, ey - 0.2 * up, ew * 1.05, up * 2.1, 24, np.pi * 1.15, np.pi * 1.85),
            skin * 0.65,
            0.006,
            0.4,
        )
        u = np.linspace(-1, 1, 20)
        bx = ex + s * u * 1.25 * ew
        by = ey - 0.07 - ident.brow_arch * (1 - u**2) + 0.01 * u
        thick = ident.brow_thickness * (1.1 - 0.45 * (u + 1) / 2)
        brow = np.concatenate([np.stack([bx, by - thick / 2], 1), np.stack([bx, by + thick / 2], 1)[::-1]])
        cv.fill(brow, np.minimum(hair * 0.75, 200), 0.95, 0.002, cover=False)
        eyes.append((ex, ey, ew))
        c = cv.px([[ex, ey]])[0]
        eye_styles.append(
            EyeStyle(
                (float(c[0]), float(c[1])), ew * unit, up * unit, lo * unit, tuple(int(v) for v in skin * 0.9)
            )
        )
    _hair(cv, ident, hair)
    if ident.glasses != "none":
        draw_glasses(cv, ident, eyes)

    mc = cv.px([[0, my]])[0]
    mouth = MouthStyle(
        (float(mc[0]), float(mc[1])),
        ident.mouth_width * unit,
        ident.lip_upper * unit,
        ident.lip_lower * unit,
        ident.lip_color,
    )
    chin = cv.px([[0, 0.5]])[0][1]
    jaw_box, field = jaw_field((h, w), mc[1], chin, mc[0], fw * ident.jaw * unit)
    bg = draw_background(ident.background, ident.background_colors, (h, w), rng)
    fx1, fy1 = cv.px([[-fw, -0.5]])[0]
    fx2, fy2 = cv.px([[fw, 0.5]])[0]
    return FaceLayer(
        np.clip(cv.rgb, 0, 255).astype(np.uint8),
        cv.alpha,
        bg,
        scale,
        mouth,
        tuple(eye_styles),
        (float(fx1), float(fy1), float(fx2), float(fy2)),
        (float(cv.c[0]), float(cv.c[1] + 0.1 * unit)),
        jaw_box,
        field,
    )
