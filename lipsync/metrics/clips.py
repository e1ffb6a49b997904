"""Video files -> the frame streams the metrics read (the I/O edge of ``lipsync.metrics``).

* SyncNet (LSE), **whole-frame** mode (what the published LRS2 scripts do, for clips that are
  already face crops): frames re-timed to 25 fps, each whole frame resized to 224x224
  (``cv2.resize``, bilinear).
* SyncNet, **in-the-wild** mode (the published real-video pipeline): frames re-timed to 25 fps,
  the face detected and tracked by ``marlin.face`` (centred smoothing, gap bridging), and cut
  with syncnet_python's crop geometry: half-size ``s = max(w, h) / 2`` of the box; the crop
  spans ``[cx - s(1 + c), cx + s(1 + c)]`` across and ``[cy - s, cy + s(1 + 2c)]`` down (more
  below the chin), ``c = 0.4``, grey 110 outside the frame, resized to 224x224.
  Frames without a face split the video into runs; LSE is taken on the longest run.
* FID / LPIPS / SSIM / PSNR: native frame rate; ``region="frame"`` uses whole frames,
  ``region="face"`` square face crops (``marlin.face.marlin_crop`` of the tracked box). For
  frame pairs, both videos are cut with the reference's boxes so the crops stay aligned.

Everything streams: memory does not grow with video length.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

SYNCNET_FPS = 25
SYNCNET_SIZE = 224
CROP_SCALE = 0.4  # syncnet_python's --crop_scale
PAD_VALUE = 110  # grey used outside the frame by syncnet_python's crop
LSE_MODES = ("whole", "wild")
REGIONS = ("face", "frame")


def resize_whole(image: np.ndarray, size: int = SYNCNET_SIZE) -> np.ndarray:
    """Whole frame (H, W, 3) -> (size, size, 3), bilinear, aspect ratio not kept (LRS2 scripts)."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def syncnet_crop(
    image: np.ndarray,
    box,
    crop_scale: float = CROP_SCALE,
    size: int = SYNCNET_SIZE,
    pad_value: int = PAD_VALUE,
) -> np.ndarray:
    """syncnet_python's face crop of ``box = (x1, y1, x2, y2)`` (see module doc): (size, size, 3).

    Integer bounds follow the reference (the frame is padded by ``int(s(1 + 2c))`` and slice
    bounds are truncated with ``int``).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    s = max(y2 - y1, x2 - x1) / 2
    if not s > 0:
        raise ValueError(f"empty face box {tuple(box)}")
    pad = int(s * (1 + 2 * crop_scale))
    my, mx = (y1 + y2) / 2 + pad, (x1 + x2) / 2 + pad  # centre in the padded frame
    top, bottom = int(my - s), int(my + s * (1 + 2 * crop_scale))
    left, right = int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale))
    h, w = image.shape[:2]
    out = np.full((bottom - top, right - left, image.shape[2]), pad_value, image.dtype)
    # padded-frame coordinates -> frame coordinates
    fy0, fy1 = max(top - pad, 0), min(bottom - pad, h)
    fx0, fx1 = max(left - pad, 0), min(right - pad, w)
    if fy1 > fy0 and fx1 > fx0:
        out[fy0 + pad - top : fy1 + pad - top, fx0 + pad - left : fx1 + pad - left] = image[fy0:fy1, fx0:fx1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


BoxCache = dict  # (path, fps) -> list of per-frame boxes (None where no face is tracked)


def tracked(
    path: str | Path, fps: float | None = None, detector=None, cache: BoxCache | None = None
) -> Iterator[tuple[object, np.ndarray | None]]:
    """``(marlin.video.Frame, box or None)`` per frame, tracking with ``marlin.face.track_video``.

    With a ``cache`` dict, the boxes of a ``(path, fps)`` pair are recorded on the first pass and
    reused afterwards (only the frames are decoded again; no detection). The cache holds 4
    numbers per frame.
    """
    from marlin.face import track_video
    from marlin.video import iter_frames

    key = (str(Path(path).resolve()), None if fps is None else Fraction(fps))
    if cache is not None and key in cache:
        boxes = cache[key]
        for frame, box in zip(iter_frames(path, fps=fps), boxes):
            yield frame, box
        return
    boxes = []
    for frame, tr in track_video(path, fps=fps, detector=detector):
        box = np.asarray(tr.box, np.float64) if tr.found else None
        boxes.append(box)
        yield frame, box
    if cache is not None:
        cache[key] = boxes


def whole_frames(path: str | Path, size: int = SYNCNET_SIZE) -> Iterator[np.ndarray]:
    """Whole-frame mode: 25 fps frames resized to (size, size, 3) uint8 RGB."""
    from marlin.video import iter_frames

    for frame in iter_frames(path, fps=SYNCNET_FPS):
        yield resize_whole(frame.image, size)


def wild_crops(
    path: str | Path, detector=None, size: int = SYNCNET_SIZE, cache: BoxCache | None = None
) -> Iterator[tuple[int, np.ndarray | None]]:
    """In-the-wild mode: ``(frame index at 25 fps, crop or None)``; None where no face is tracked."""
    for frame, box in tracked(path, SYNCNET_FPS, detector, cache):
        yield frame.index, (None if box is None else syncnet_crop(frame.image, box, size=size))


def _face_crop(image: np.ndarray, box, size: int) -> np.ndarray:
    from marlin.face import marlin_crop

    return marlin_crop(image, box, size)[0]


def region_frames(
    path: str | Path,
    region: str = "face",
    size: int = SYNCNET_SIZE,
    detector=None,
    cache: BoxCache | None = None,
) -> Iterator[np.ndarray]:
    """Frames for FID at the native rate: whole frames, or (size, size, 3) face crops of the
    frames where a face is tracked (others are skipped)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")
    if region == "frame":
        from marlin.video import iter_frames

        for frame in iter_frames(path):
            yield frame.image
        return
    for frame, box in tracked(path, None, detector, cache):
        if box is not None:
            yield _face_crop(frame.image, box, size)


def frame_pairs(
    generated: str | Path,
    reference: str | Path,
    region: str = "face",
    size: int = SYNCNET_SIZE,
    detector=None,
    cache: BoxCache | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Aligned ``(generated, reference)`` frame pairs, frame ``i`` with frame ``i`` at the native rate.

    With ``region="face"`` both are cut with the reference's tracked box (frames where the
    reference has no face are skipped). A generated video of another size is resized to the
    reference's; one of another length is compared over the shorter one (both with a warning).
    """
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")
    from marlin.video import iter_frames, probe

    gi, ri = probe(generated), probe(reference)
    if gi.size != ri.size:
        warnings.warn(
            f"{generated}: {gi.width}x{gi.height} frames resized to the reference's {ri.width}x{ri.height}",
            stacklevel=2,
        )
    if Fraction(gi.fps) != Fraction(ri.fps):
        warnings.warn(
            f"{generated}: {float(gi.fps):.3f} fps vs reference {float(ri.fps):.3f} fps; "
            "pairing frames by index",
            stacklevel=2,
        )
    if gi.n_frames != ri.n_frames:
        warnings.warn(
            f"{generated}: {gi.n_frames} frames vs {ri.n_frames} in the reference; comparing the "
            f"first {min(gi.n_frames, ri.n_frames)}",
            stacklevel=2,
        )
    if region == "frame":
        refs = ((f.image, None) for f in iter_frames(reference))
    else:
        refs = ((f.image, box) for f, box in tracked(reference, None, detector, cache))
    for gen, (ref, box) in zip(iter_frames(generated), refs):
        gen = gen.image
        if gen.shape != ref.shape:
            gen = cv2.resize(gen, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)
        if region == "frame":
            yield gen, ref
        elif box is not None:
            yield _face_crop(gen, box, size), _face_crop(ref, box, size)
