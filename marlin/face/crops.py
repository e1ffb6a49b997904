"""Face crops (Wav2Lip style and MARLIN style) with exact maps between crop and frame.

A crop takes an axis-aligned region ``[x0, x1) x [y0, y1)`` of the frame (integer pixel edges,
possibly reaching outside the frame, where it is zero) and resizes it to ``width x height``.
``CropMap`` records that region, so points and images move exactly between the two:
``u = (x - x0) * width / (x1 - x0)`` and back (continuous pixel coordinates, pixel ``i``
covering ``[i, i + 1)``, the same convention ``cv2.resize`` follows).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CropMap", "crop_region", "marlin_crop", "wav2lip_crop", "wav2lip_region", "marlin_region"]


@dataclass(frozen=True)
class CropMap:
    """Where a crop came from.

    Attributes
    ----------
    x0, y0, x1, y1 : int
        Frame region (pixel edges; may extend past the frame, where the crop is zero padded).
    width, height : int
        Crop size in pixels.
    frame_width, frame_height : int
        Size of the frame the crop was taken from.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    width: int
    height: int
    frame_width: int
    frame_height: int

    @property
    def scale(self) -> tuple[float, float]:
        """Crop pixels per frame pixel along x and y."""
        return self.width / (self.x1 - self.x0), self.height / (self.y1 - self.y0)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame coordinates (..., 2) x, y -> crop coordinates (float64)."""
        p = np.asarray(points, np.float64)
        sx, sy = self.scale
        return np.stack([(p[..., 0] - self.x0) * sx, (p[..., 1] - self.y0) * sy], axis=-1)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop coordinates (..., 2) x, y -> frame coordinates (float64); inverse of ``to_crop``."""
        p = np.asarray(points, np.float64)
        sx, sy = self.scale
        return np.stack([p[..., 0] / sx + self.x0, p[..., 1] / sy + self.y0], axis=-1)

    def box_to_crop(self, box) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in frame pixels -> crop pixels."""
        (a, b), (c, d) = self.to_crop(np.reshape(np.asarray(box, np.float64), (2, 2)))
        return float(a), float(b), float(c), float(d)

    @property
    def visible(self) -> tuple[slice, slice]:
        """Frame slices ``(rows, cols)`` of the part of the region inside the frame."""
        return (slice(max(self.y0, 0), min(self.y1, self.frame_height)),
                slice(max(self.x0, 0), min(self.x1, self.frame_width)))

    def uncrop(self, crop: np.ndarray, interpolation: int | None = None
               ) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Resize ``crop`` back to the region and return its in-frame part and where it goes.

        Returns
        -------
        patch : np.ndarray
            (h, w, C) same dtype as ``crop``; ``frame[rows, cols] = patch`` would hard-paste it.
        (rows, cols) : tuple of slice
        """
        if crop.shape[:2] != (self.height, self.width):
            raise ValueError(f"crop is {crop.shape[1]}x{crop.shape[0]}, "
                             f"map expects {self.width}x{self.height}")
        rw, rh = self.x1 - self.x0, self.y1 - self.y0
        if interpolation is None:
            interpolation = cv2.INTER_AREA if rw < self.width else cv2.INTER_CUBIC
        full = cv2.resize(crop, (rw, rh), interpolation=interpolation)
        if full.ndim == 2 and crop.ndim == 3:
            full = full[..., None]
        rows, cols = self.visible
        patch = full[rows.start - self.y0: rows.stop - self.y0, cols.start - self.x0: cols.stop - self.x0]
        return patch, (rows, cols)


def crop_region(frame: np.ndarray, region: tuple[int, int, int, int], size: tuple[int, int],
                interpolation: int | None = None) -> tuple[np.ndarray, CropMap]:
    """Cut ``region = (x0, y0, x1, y1)`` (zero padded outside ``frame``) and resize to ``size = (w, h)``."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in region)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop region {region}")
    out_w, out_h = int(size[0]), int(size[1])
    cmap = CropMap(x0, y0, x1, y1, out_w, out_h, w, h)
    rows, cols = cmap.visible
    if rows.start >= rows.stop or cols.start >= cols.stop:
        raise ValueError(f"crop region {region} lies outside the {w}x{h} frame")
    if (x0, y0, x1, y1) == (cols.start, rows.start, cols.stop, rows.stop):
        part = frame[rows, cols]
    else:
        part = np.zeros((y1 - y0, x1 - x0) + frame.shape[2:], frame.dtype)
        part[rows.start - y0: rows.stop - y0, cols.start - x0: cols.stop - x0] = frame[rows, cols]
    if interpolation is None:
        interpolation = cv2.INTER_AREA if (x1 - x0) > out_w else cv2.INTER_CUBIC
    crop = cv2.resize(np.ascontiguousarray(part), (out_w, out_h), interpolation=interpolation)
    if crop.ndim == 2 and frame.ndim == 3:
        crop = crop[..., None]
    return crop, cmap


def wav2lip_region(box, frame_shape: tuple[int, ...], pads: tuple[int, int, int, int] = (0, 10, 0, 0)
                   ) -> tuple[int, int, int, int]:
    """Wav2Lip's face region: ``box`` grown by ``pads = (top, bottom, left, right)`` pixels and
    clipped to the frame, as integer ``(x0, y0, x1, y1)``."""
    h, w = frame_shape[:2]
    top, bottom, left, right = pads
    x1, y1, x2, y2 = box
    x0 = max(0, int(round(x1 - left)))
    y0 = max(0, int(round(y1 - top)))
    xe = min(w, int(round(x2 + right)))
    ye = min(h, int(round(y2 + bottom)))
    if xe <= x0 or ye <= y0:
        raise ValueError(f"face box {tuple(box)} with pads {pads} is empty inside the {w}x{h} frame")
    return x0, y0, xe, ye


def wav2lip_crop(frame: np.ndarray, box, pads: tuple[int, int, int, int] = (0, 10, 0, 0), size: int = 96
                 ) -> tuple[np.ndarray, CropMap]:
    """Wav2Lip-style face crop: the padded box (clipped to the frame) resized to ``size x size``.

    Parameters
    ----------
    frame : np.ndarray
        (H, W, C) image (any dtype OpenCV resizes; RGB uint8 in this project).
    box : sequence of 4 float
        ``(x1, y1, x2, y2)`` face box in frame pixels.
    pads : tuple of 4 int
        Pixels added on (top, bottom, left, right); Wav2Lip's default is (0, 10, 0, 0), extending
        the box below the chin.
    size : int
        Output side (96 for the released Wav2Lip). The aspect ratio is not kept, as in Wav2Lip.

    Returns
    -------
    crop : np.ndarray
        (size, size, C), same dtype as ``frame``.
    crop_map : CropMap
    """
    return crop_region(frame, wav2lip_region(box, frame.shape, pads), (size, size))


def marlin_region(box, scale: float = 1.0) -> tuple[int, int, int, int]:
    """Square of side ``scale * max(w, h)`` centred on the box, as integer ``(x0, y0, x1, y1)``."""
    x1, y1, x2, y2 = box
    side = max(1, int(round(max(x2 - x1, y2 - y1) * scale)))
    x0 = int(round((x1 + x2 - side) / 2))
    y0 = int(round((y1 + y2 - side) / 2))
    return x0, y0, x0 + side, y0 + side


def marlin_crop(frame: np.ndarray, box, size: int = 224, scale: float = 1.0) -> tuple[np.ndarray, CropMap]:
    """MARLIN-style face crop: a square of side ``scale * max(w, h)`` around the box centre,
    zero padded where it leaves the frame, resized to ``size x size`` (MARLIN's preprocessing
    with ``scale=1``).

    Returns
    -------
    crop : np.ndarray
        (size, size, C), same dtype as ``frame``.
    crop_map : CropMap
    """
    return crop_region(frame, marlin_region(box, scale), (size, size))
