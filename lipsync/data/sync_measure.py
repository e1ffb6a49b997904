"""Ground-truth sync measure for synthetic clips.

Two numbers say how well a (dubbed) clip's mouth follows the speech:

- **sync correlation**: Pearson correlation between the mouth opening measured in the frames
  (inner-lip gap from mediapipe landmarks, divided by the distance between the outer eye
  corners) and the opening the audio demands (the ground-truth mouth track of that audio,
  ``lipsync.data.synthetic.visemes.opening``).  Near 1 when the mouth follows the speech, near
  0 for a still mouth or one that follows other speech.  A small lag search reports the
  offset at which the correlation peaks.
- **mouth-region error**: mean absolute difference, in 8-bit levels, between the frames and a
  reference render of the same face speaking the same audio, over the lip box of the render
  (enlarged by a margin).

Pure functions take arrays; ``measure_openings`` runs the face pipeline on frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .synthetic.landmarks import EYE_OUTER, INNER_GAP_PAIRS, LIPS_INNER, MOUTH_CORNERS, detect_face

__all__ = ["SyncScore", "measure_openings", "mouth_opening", "mouth_region_error", "mouth_region_sums",
           "mouth_teeth", "mouth_width", "sync_correlation"]


@dataclass(frozen=True)
class SyncScore:
    """Correlation at zero lag, the best correlation within the lag search and its lag (frames;
    positive = the video lags the audio), and the number of frames with a measurement."""

    correlation: float
    best_correlation: float
    best_lag: int
    n_frames: int


def mouth_opening(landmarks: np.ndarray) -> np.ndarray | float:
    """Inner-lip opening relative to the outer-eye-corner distance.

    Parameters
    ----------
    landmarks : (478, 2) or (T, 478, 2) float, mediapipe face-mesh points in pixels.

    Returns
    -------
    float, or (T,) float32; about 0 for closed lips, 0.3-0.5 for a wide open mouth.
    """
    pts = _mesh(landmarks)
    upper = pts[..., [a for a, _ in INNER_GAP_PAIRS], :]
    lower = pts[..., [b for _, b in INNER_GAP_PAIRS], :]
    return _over_eyes(pts, np.linalg.norm(lower - upper, axis=-1).mean(-1))


def mouth_width(landmarks: np.ndarray) -> np.ndarray | float:
    """Distance between the mouth corners relative to the outer-eye-corner distance.

    Parameters
    ----------
    landmarks : (478, 2) or (T, 478, 2) float, mediapipe face-mesh points in pixels.

    Returns
    -------
    float, or (T,) float32; about 0.5-0.7 for a relaxed mouth, less for rounded lips.
    """
    pts = _mesh(landmarks)
    left, right = pts[..., MOUTH_CORNERS[0], :], pts[..., MOUTH_CORNERS[1], :]
    return _over_eyes(pts, np.linalg.norm(right - left, axis=-1))


def mouth_geometry(landmarks: np.ndarray, width: float, height: float | None = None) -> np.ndarray:
    """Where a face's mouth is in a crop, as ``mouth_map`` generators take it (``mouth_geometry``).

    Parameters
    ----------
    landmarks : (478, 2) or (T, 478, 2) mediapipe face-mesh points in the pixels of a face crop.
    width, height : the crop's size in those pixels (``height`` defaults to ``width``).

    Returns
    -------
    (5,) or (T, 5) float32 ``(cx, cy, ux, uy, e)``: the mouth corners' midpoint as fractions of the
    crop's width and height, the unit direction from the image-left corner to the right one, and
    the outer-eye-corner distance as a fraction of the crop's size.
    """
    pts = _mesh(landmarks).astype(np.float64) / np.array([width, height or width])
    left, right = pts[..., MOUTH_CORNERS[0], :], pts[..., MOUTH_CORNERS[1], :]
    along = right - left
    unit = along / np.maximum(np.linalg.norm(along, axis=-1, keepdims=True), 1e-6)
    eyes = np.linalg.norm(pts[..., EYE_OUTER[0], :] - pts[..., EYE_OUTER[1], :], axis=-1)
    return np.concatenate([(left + right) / 2, unit, eyes[..., None]], axis=-1).astype(np.float32)


#: what counts as tooth in :func:`mouth_teeth`: a pixel's saturation (max - min) / max below
#: ``TEETH_SATURATION`` and its brightness (max channel) above ``TEETH_BRIGHTNESS``, each with a
#: linear ramp of ``TEETH_RAMP`` (lips, tongue and the cavity are saturated or dark; teeth are
#: neither)
TEETH_SATURATION, TEETH_BRIGHTNESS, TEETH_RAMP = 0.45, 0.45, 0.2


def mouth_teeth(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray | float:
    """How much tooth shows between the lips: the tooth-like area inside the inner-lip contour
    relative to the squared outer-eye-corner distance.

    Landmarks say how far the lips are apart but not whether teeth fill the gap (the ``teeth`` of
    the synthetic renderer, or an "s" against an "ah" on a real face), so this reads the pixels:
    each pixel inside the face mesh's inner-lip polygon counts by how unsaturated and bright it is
    (``TEETH_SATURATION``, ``TEETH_BRIGHTNESS``).  Written by hand: a per-frame polygon fill (OpenCV)
    and a colour test on the few pixels around the mouth.

    Parameters
    ----------
    frames : (H, W, 3) or (T, H, W, 3) uint8 RGB.
    landmarks : (478, 2) or (T, 478, 2) mediapipe face-mesh points in those frames' pixels.

    Returns
    -------
    float, or (T,) float32: 0 with no teeth showing, about 0.01-0.02 for a wide open mouth
    showing its upper teeth (synthetic faces: median 0.002, 90th percentile 0.012; a broad real
    smile, scikit-image's astronaut: 0.05).
    """
    import cv2

    pts = _mesh(landmarks)
    images = np.asarray(frames)
    single = images.ndim == 3
    if single:
        images, pts = images[None], pts[None]
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(pts):
        raise ValueError(f"expected (T, H, W, 3) frames matching (T, 478, 2) landmarks, "
                         f"got {images.shape} and {pts.shape}")
    out = np.zeros(len(images), np.float32)
    for k, (image, ring) in enumerate(zip(images, pts[:, list(LIPS_INNER)])):
        x1, y1 = np.maximum(np.floor(ring.min(0)).astype(int), 0)
        x2, y2 = np.minimum(np.ceil(ring.max(0)).astype(int) + 1, image.shape[1::-1])
        if x2 <= x1 or y2 <= y1:
            continue
        mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
        corners = np.round((ring - [x1, y1]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [corners], 255, cv2.LINE_AA, shift=4)
        patch = image[y1:y2, x1:x2].astype(np.float32) / 255.0
        bright, dark = patch.max(-1), patch.min(-1)
        saturation = (bright - dark) / np.maximum(bright, 1e-3)
        tooth = np.clip((TEETH_SATURATION - saturation) / TEETH_RAMP, 0, 1) \
            * np.clip((bright - TEETH_BRIGHTNESS) / TEETH_RAMP, 0, 1)
        out[k] = float((tooth * mask).sum() / 255.0)
    eyes = np.linalg.norm(pts[:, EYE_OUTER[0]] - pts[:, EYE_OUTER[1]], axis=-1)
    out = out / np.maximum(eyes, 1e-6) ** 2
    return float(out[0]) if single else out.astype(np.float32)


def _mesh(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, np.float32)
    if pts.shape[-2:] != (478, 2) and pts.shape[-2:] != (468, 2):
        raise ValueError(f"expected mediapipe landmarks (..., 478, 2), got shape {pts.shape}")
    return pts


def _over_eyes(pts: np.ndarray, distance: np.ndarray) -> np.ndarray | float:
    """``distance`` divided by the outer-eye-corner distance of ``pts``: a face-size-free measure."""
    eyes = np.linalg.norm(pts[..., EYE_OUTER[0], :] - pts[..., EYE_OUTER[1], :], axis=-1)
    out = distance / np.maximum(eyes, 1e-6)
    return float(out) if out.ndim == 0 else out.astype(np.float32)


def measure_openings(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Measured mouth opening per RGB uint8 frame (H, W, 3) -> (T,) float32, NaN where no face."""
    out = []
    for frame in frames:
        found = detect_face(frame)
        out.append(np.nan if found is None else mouth_opening(found.landmarks))
    return np.asarray(out, np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    # a constant signal carries no sync information: report 0, not NaN
    return float((a * b).sum() / denom) if denom > 1e-12 else 0.0


def sync_correlation(measured: np.ndarray, demanded: np.ndarray, max_lag: int = 2) -> SyncScore:
    """Correlate measured openings (T1,) with the demanded opening (T2,) over their common frames.

    NaN entries (no face) are skipped.  ``max_lag`` frames of shift are searched in both
    directions; lag ``k`` compares video frame ``t + k`` with audio frame ``t``.
    """
    measured = np.asarray(measured, np.float64).ravel()
    demanded = np.asarray(demanded, np.float64).ravel()
    n = min(len(measured), len(demanded))
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    m, d = measured[:n], demanded[:n]
    r0 = _pearson(m, d)
    best, best_lag = r0, 0
    for lag in range(-max_lag, max_lag + 1):
        if lag == 0 or n - abs(lag) < 3:
            continue
        r = _pearson(m[lag:], d[: n - lag]) if lag > 0 else _pearson(m[: n + lag], d[-lag:])
        if np.isfinite(r) and (not np.isfinite(best) or r > best):
            best, best_lag = r, lag
    return SyncScore(r0, best, best_lag, int(np.isfinite(m).sum()))


def mouth_region_error(
    frames: np.ndarray, reference: np.ndarray, mouth_boxes: np.ndarray, margin: float = 0.3
) -> float:
    """Mean absolute difference (8-bit levels) inside the reference's lip boxes, over all their
    pixels (a frame with a bigger box weighs more).

    Parameters
    ----------
    frames, reference : (T, H, W, 3) uint8 (compared over the first min(T) frames).
    mouth_boxes : (T, 4) x1, y1, x2, y2 lip boxes of the reference, pixels.
    margin : enlarge each box by this fraction of its size on every side (includes the chin).
    """
    totals, counts = mouth_region_sums(frames, reference, mouth_boxes, margin)
    count = int(counts.sum())
    return float(totals.sum()) / count if count else float("nan")


def mouth_region_sums(
    frames: np.ndarray, reference: np.ndarray, mouth_boxes: np.ndarray, margin: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the summed absolute difference inside the lip box and the number of values
    summed: :func:`mouth_region_error` frame by frame, ``(n,)`` float64 and ``(n,)`` int64 over the
    first ``n = min(T)`` frames (0 and 0 where the box falls outside the frame)."""
    n = min(len(frames), len(reference), len(mouth_boxes))
    totals, counts = np.zeros(n), np.zeros(n, np.int64)
    if n and frames[0].shape != reference[0].shape:
        raise ValueError(f"frame size {frames[0].shape} differs from the reference {reference[0].shape}")
    h, w = reference[0].shape[:2] if n else (0, 0)
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in mouth_boxes[i])
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        xa, ya = max(int(x1 - mx), 0), max(int(y1 - my), 0)
        xb, yb = min(int(math.ceil(x2 + mx)), w), min(int(math.ceil(y2 + my)), h)
        if xb <= xa or yb <= ya:
            continue
        diff = np.abs(frames[i][ya:yb, xa:xb].astype(np.int16) - reference[i][ya:yb, xa:xb].astype(np.int16))
        totals[i], counts[i] = float(diff.sum()), diff.size
    return totals, counts
