"""Per-frame drawing of the parts that move: the mouth (from mouth parameters) and eyelids.

Both work on a small patch of the face layer in float32 with antialiased masks, so a
frame costs well under a millisecond here.  Coordinates are layer pixels (the layer is
drawn at a supersampled resolution and reduced at the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["EyeStyle", "MouthStyle", "GAP_PER_OPEN", "JAW_SHARE", "draw_eyelid", "draw_mouth", "mouth_extent"]

GAP_PER_OPEN = 0.9  # inner lip gap at open = 1, in units of the mouth half width
JAW_SHARE = 0.72  # share of the gap made by the lower lip / jaw moving down
_SHIFT = 4  # fixed-point bits for cv2 drawing


@dataclass(frozen=True)
class MouthStyle:
    """Where and how one face's mouth is drawn (layer pixels, RGB colours 0..255)."""

    center: tuple[float, float]  # lip-line centre at rest
    half_width: float  # corner-to-centre distance at rest
    upper: float  # upper lip thickness
    lower: float  # lower lip thickness
    lip: tuple[int, int, int]
    cavity: tuple[int, int, int] = (45, 12, 18)
    teeth: tuple[int, int, int] = (236, 232, 220)
    tongue: tuple[int, int, int] = (170, 70, 80)
    roll: float = 0.0  # tilt of the mouth (radians), for photos


@dataclass(frozen=True)
class EyeStyle:
    """An open eye as an almond: centre, half width, upper/lower half heights (layer pixels)."""

    center: tuple[float, float]
    half_width: float
    upper: float
    lower: float
    lid: tuple[int, int, int]  # eyelid (skin) colour
    lash: tuple[int, int, int] = (30, 22, 20)
    roll: float = 0.0


def _fill(patch: np.ndarray, pts: np.ndarray, color, alpha: float = 1.0, blur: float = 0.0) -> None:
    """Alpha-blend an antialiased polygon (patch pixels, float) of ``color`` into a float32 patch."""
    mask = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts * (1 << _SHIFT)).astype(np.int32)], 255, cv2.LINE_AA, shift=_SHIFT)
    m = mask.astype(np.float32) * (alpha / 255.0)
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    patch *= 1.0 - m[..., None]
    patch += m[..., None] * np.asarray(color, np.float32)


def _line(patch: np.ndarray, pts: np.ndarray, color, thickness: float, alpha: float = 1.0) -> None:
    mask = np.zeros(patch.shape[:2], np.uint8)
    cv2.polylines(
        mask,
        [np.round(pts * (1 << _SHIFT)).astype(np.int32)],
        False,
        255,
        max(1, int(round(thickness))),
        cv2.LINE_AA,
        shift=_SHIFT,
    )
    m = mask.astype(np.float32) * (alpha / 255.0)
    patch *= 1.0 - m[..., None]
    patch += m[..., None] * np.asarray(color, np.float32)


def mouth_extent(style: MouthStyle, params: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (x1, y1, x2, y2) of the drawn lips for mouth ``params`` (4,), layer pixels."""
    open_, width, round_, _ = (float(v) for v in params)
    w = style.half_width * (0.8 + 0.4 * width) * (1.0 - 0.3 * round_)
    gap = GAP_PER_OPEN * style.half_width * open_
    cx, cy = style.center
    top = cy - (1.0 - JAW_SHARE) * gap - style.upper * (1 + 0.3 * round_)
    bottom = cy + JAW_SHARE * gap + style.lower * (1 + 0.3 * round_)
    return cx - w, top, cx + w, bottom


def _curves(style: MouthStyle, params: np.ndarray, n: int = 33):
    """Outer/inner lip contours relative to the rest centre, before rotation."""
    open_, width, round_, _ = (float(v) for v in params)
    w = style.half_width * (0.8 + 0.4 * width) * (1.0 - 0.3 * round_)
    wi = w * (0.93 - 0.35 * round_)
    gap = GAP_PER_OPEN * style.half_width * open_
    up, down = (1.0 - JAW_SHARE) * gap, JAW_SHARE * gap
    tu, tl = style.upper * (1 + 0.3 * round_), style.lower * (1 + 0.3 * round_)
    u = np.linspace(-1.0, 1.0, n)
    x = u * w
    inner = np.sqrt(np.clip(1.0 - (x / wi) ** 2, 0.0, None))
    bow = 1.0 - 0.18 * np.exp(-((u / 0.14) ** 2))  # cupid's bow dip at the centre
    upper_outer = -up * inner - tu * (1.0 - np.abs(u) ** 2.2) ** 0.7 * bow
    upper_inner = -up * inner
    lower_inner = down * inner
    lower_outer = down * np.sqrt(np.clip(1.0 - u**2, 0.0, None)) + tl * (1.0 - np.abs(u) ** 2) ** 0.6
    return x, upper_outer, upper_inner, lower_inner, lower_outer, gap


def draw_mouth(layer: np.ndarray, style: MouthStyle, params: np.ndarray) -> None:
    """Draw lips, mouth cavity, teeth and tongue for ``params`` (open, width, round, teeth) in place.

    ``layer`` is (H, W, 3) uint8; only a patch around the mouth is touched.
    """
    x, uo, ui, li, lo, gap = _curves(style, params)
    w_inner = float(x.max()) * (0.93 - 0.35 * float(params[2]))
    teeth_amount = float(params[3])
    cx, cy = style.center
    c, s = np.cos(style.roll), np.sin(style.roll)
    margin = 3.0 + 0.6 * style.lower
    x1, y1, x2, y2 = (
        int(np.floor(cx + x.min() - margin - 2)),
        int(np.floor(cy + uo.min() - margin)),
        int(np.ceil(cx + x.max() + margin + 2)),
        int(np.ceil(cy + lo.max() + margin + style.lower)),
    )
    pad = int(abs(s) * (x2 - x1) / 2) + 1
    y1, y2 = max(0, y1 - pad), min(layer.shape[0], y2 + pad)
    x1, x2 = max(0, x1), min(layer.shape[1], x2)
    if x2 <= x1 or y2 <= y1:
        return
    patch = layer[y1:y2, x1:x2].astype(np.float32)

    def to_patch(xs, ys):
        return np.stack([cx + c * xs - s * ys - x1, cy + s * xs + c * ys - y1], 1)

    lip = np.asarray(style.lip, np.float32)
    # soft shadow under the lower lip and at the corners
    _fill(patch, to_patch(x * 0.8, lo + style.lower * 0.55), lip * 0.45, alpha=0.25, blur=style.lower * 0.5)
    _fill(patch, np.concatenate([to_patch(x, uo), to_patch(x[::-1], lo[::-1])]), lip * 0.88)
    if gap > 0.02 * style.half_width:
        inner = np.concatenate([to_patch(x, ui), to_patch(x[::-1], li[::-1])])
        mouth = np.zeros(patch.shape[:2], np.uint8)
        cv2.fillPoly(
            mouth, [np.round(inner * (1 << _SHIFT)).astype(np.int32)], 255, cv2.LINE_AA, shift=_SHIFT
        )
        cav = patch.copy()
        cav[:] = style.cavity
        # tongue low in the mouth, teeth under the upper lip (and over the lower lip when wide open)
        _fill(
            cav,
            to_patch(x * 0.7, li - 0.35 * gap * np.sqrt(np.clip(1 - (x / x.max()) ** 2, 0, 1))),
            style.tongue,
            alpha=min(1.0, float(params[0]) * 1.5),
        )
        tooth_h = teeth_amount * min(0.55 * gap, 0.6 * style.upper + 0.12 * gap)
        if tooth_h > 0.3:
            tx = x * 0.82
            top = ui.min() - 2.0 + 0 * tx
            edge = -(1.0 - JAW_SHARE) * gap + tooth_h * (1.0 - 0.35 * (tx / max(w_inner, 1e-3)) ** 2)
            shade = np.asarray(style.teeth, np.float32)
            _fill(cav, np.concatenate([to_patch(tx, top), to_patch(tx[::-1], edge[::-1])]), shade * 0.82)
            _fill(
                cav,
                np.concatenate([to_patch(tx * 0.6, top), to_patch(tx[::-1] * 0.6, edge[::-1])]),
                shade,
                blur=0.08 * style.half_width,
            )
            low_h = teeth_amount * max(0.0, 0.22 * gap - 0.35 * style.lower)
            if low_h > 0.3:
                lx = x * 0.62
                bottom = li.max() + 2.0 + 0 * lx
                ledge = JAW_SHARE * gap - low_h * (1.0 - 0.35 * (lx / max(w_inner, 1e-3)) ** 2)
                _fill(
                    cav, np.concatenate([to_patch(lx, ledge), to_patch(lx[::-1], bottom[::-1])]), shade * 0.78
                )
        m = mouth.astype(np.float32)[..., None] / 255.0
        patch = patch * (1 - m) + cav * m
    # lip line (closed mouth crease) and lighter lower-lip highlight
    _line(patch, to_patch(x * 0.97, (ui + li) / 2), lip * 0.45, max(1.0, 0.18 * style.upper), alpha=0.9)
    _fill(
        patch,
        to_patch(x * 0.45, li + style.lower * 0.45 + 0.0 * x),
        np.minimum(lip * 1.25 + 20, 255),
        alpha=0.35,
        blur=style.lower * 0.25,
    )
    _fill(
        patch,
        np.concatenate([to_patch(x, lo - 0.4 * (lo - li)), to_patch(x[::-1], lo[::-1])]),
        np.minimum(lip * 1.08, 255),
        alpha=0.6,
        blur=1.0,
    )
    layer[y1:y2, x1:x2] = np.clip(patch, 0, 255).astype(np.uint8)


def draw_eyelid(layer: np.ndarray, eye: EyeStyle, closed: float) -> None:
    """Lower the upper eyelid over ``eye`` by ``closed`` in [0, 1] (1 = shut), in place."""
    if closed <= 0.02:
        return
    cx, cy = eye.center
    c, s = np.cos(eye.roll), np.sin(eye.roll)
    w = eye.half_width * 1.08
    u = np.linspace(-1.0, 1.0, 25)
    xs = u * w
    prof = np.sqrt(np.clip(1 - u**2, 0, None))
    top = -(eye.upper * 1.25) * prof - 1.0
    bottom = eye.lower * prof
    edge = top + min(closed, 1.0) * (bottom + 1.0 - top)
    x1, x2 = int(cx - w - 4), int(cx + w + 5)
    y1, y2 = int(cy - eye.upper * 1.6 - 4), int(cy + eye.lower + 6)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, layer.shape[1]), min(y2, layer.shape[0])
    if x2 <= x1 or y2 <= y1:
        return
    patch = layer[y1:y2, x1:x2].astype(np.float32)

    def to_patch(xv, yv):
        return np.stack([cx + c * xv - s * yv - x1, cy + s * xv + c * yv - y1], 1)

    _fill(patch, np.concatenate([to_patch(xs, top), to_patch(xs[::-1], edge[::-1])]), eye.lid)
    _line(patch, to_patch(xs, edge), eye.lash, max(1.0, 0.22 * eye.upper))
    layer[y1:y2, x1:x2] = np.clip(patch, 0, 255).astype(np.uint8)
