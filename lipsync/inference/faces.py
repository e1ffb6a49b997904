"""The face stages of the engine, on top of ``marlin.face``: detect + track, crop, paste back.

``FaceStage`` streams: ``push(index, rgb)`` returns the ``(index, Track)`` pairs whose centred
smoothing window is complete, so the engine holds only the tracker's lookahead of frames.
With ``detect_every=N`` the detector runs on every N-th frame and the face mesh follows the face
in between (``marlin.face.TrackConfig.detect_every``; backends without landmarks detect every
frame).  With a fixed ``--box`` nothing is detected; landmarks for the soft blending mask are
still looked for inside the box when the backend has them.
"""

from __future__ import annotations

import logging
from collections import deque

import cv2
import numpy as np

from marlin.face import (
    FaceBackendError,
    FaceDetector,
    FaceTracker,
    Track,
    TrackConfig,
    paste_back,
    wav2lip_crop,
)
from marlin.face.crops import CropMap

from .options import DubError, DubOptions

log = logging.getLogger(__name__)

FaceTrack = Track

__all__ = ["Cropper", "FaceStage", "FaceTrack", "make_detector", "track_config"]


def make_detector(options: DubOptions) -> FaceDetector:
    """The detector of ``options.face_backend``; a backend that cannot run here is a DubError."""
    try:
        return FaceDetector(options.face_backend, video=False)
    except FaceBackendError as e:
        raise DubError(f"face backend {options.face_backend!r}: {e}") from e
    except ValueError as e:
        raise DubError(str(e)) from e


def track_config(options: DubOptions) -> TrackConfig:
    """Tracker settings from the run's options."""
    sel = options.face
    target = {"largest": "largest", "index": sel.index, "point": sel.point}[sel.mode]
    if sel.mode == "point" and options.resize != 1:
        target = (sel.point[0] / options.resize, sel.point[1] / options.resize)
    window = options.smooth_window | 1  # the tracker wants odd windows
    kwargs = {"target": target, "box_window": window, "detect_every": int(options.detect_every)}
    if options.max_gap is not None:
        kwargs["max_gap"] = options.max_gap
    return TrackConfig(**kwargs)


class FaceStage:
    """Detect and track the target face over frames pushed in order.

    Parameters
    ----------
    options : run options (backend, selection, smoothing, fixed box, resize)
    detector : the detector to use (shared across passes; not closed here)
    """

    def __init__(self, options: DubOptions, detector: FaceDetector | None) -> None:
        self.options = options
        self.detector = detector
        self.scale = float(options.resize)
        self._indices: deque[int] = deque()
        self._tracker = None if options.box is not None else FaceTracker(track_config(options), detector)

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        if self.scale == 1:
            return rgb
        h, w = rgb.shape[:2]
        size = (max(1, round(w / self.scale)), max(1, round(h / self.scale)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _full(self, track: Track) -> Track:
        if self.scale == 1 or not track.found:
            return track
        lm = None if track.landmarks is None else (track.landmarks * np.float32(self.scale))
        return Track(track.index, track.box * self.scale, lm, track.found, track.detected)

    def _fixed(self, index: int, rgb: np.ndarray) -> Track:
        box = np.asarray(self.options.box, np.float64)
        lm = None
        if self.detector is not None and self.detector.has_landmarks:
            lm = self.detector.landmarks(rgb, tuple(box))
        return Track(index, box, lm, True, True)

    def push(self, index: int, rgb: np.ndarray) -> list[tuple[int, Track]]:
        """Add the next frame; returns the tracks that became final, in order."""
        if self._tracker is None:
            return [(index, self._fixed(index, rgb))]
        self._indices.append(index)
        return [(self._indices.popleft(), self._full(t)) for t in self._tracker.push(self._small(rgb))]

    def flush(self) -> list[tuple[int, Track]]:
        """Tracks of every frame still held (call once, at the end)."""
        if self._tracker is None:
            return []
        return [(self._indices.popleft(), self._full(t)) for t in self._tracker.flush()]


class Cropper:
    """Crop faces for the generator and blend its output back.

    Parameters
    ----------
    options : pads and blending settings
    size : the generator's face side (``img_size``)
    """

    def __init__(self, options: DubOptions, size: int) -> None:
        self.pads = tuple(int(p) for p in options.pads)
        self.size = size
        self.region = options.blend
        self.color_match = options.color_match
        self.keep_detail = options.keep_detail

    def crop(self, rgb: np.ndarray, track: Track) -> tuple[np.ndarray, CropMap] | None:
        """(size, size, 3) uint8 crop of the padded box and its map; None if the box left the frame."""
        try:
            return wav2lip_crop(rgb, track.box, self.pads, self.size)
        except ValueError:
            return None

    def paste(self, rgb: np.ndarray, generated: np.ndarray, crop_map: CropMap, track: Track,
              given: np.ndarray | None = None) -> np.ndarray:
        """The frame with ``generated`` blended in under the soft landmark mask; ``given`` (the crop
        the generator was shown) keeps the frame's fine detail where it was left unchanged, with
        ``keep_detail`` on."""
        return paste_back(rgb, generated, crop_map, track.landmarks, region=self.region,
                          color_match=self.color_match, given=given if self.keep_detail else None)
