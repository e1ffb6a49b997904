"""Face landmarks for the generator and the sync measure, through the project's face pipeline.

Uses ``marlin.face.FaceDetector(backend="mediapipe")`` (BlazeFace + 478-point mesh) when it
can be imported, else mediapipe's face mesh directly with the same output: the best face's
box and (478, 2) float32 landmarks in pixels.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["Detection", "detect_face", "get_detector"]

log = logging.getLogger(__name__)

# mesh indices used across the package
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
INNER_GAP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
EYE_OUTER = (33, 263)  # outer eye corners (image left / right)
MOUTH_CORNERS = (61, 291)  # outer mouth corners (image left / right)


@dataclass(frozen=True)
class Detection:
    """The best face in an image: box (x1, y1, x2, y2) pixels, score, landmarks (478, 2) float32."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None


class _MeshOnly:
    """Fallback when marlin.face is unavailable: mediapipe face mesh on the whole image."""

    def __init__(self) -> None:
        from mediapipe.python import solutions

        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
        )

    def detect(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return []
        pts = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark], np.float32)
        box = (*pts.min(0).tolist(), *pts.max(0).tolist())
        return [Detection(tuple(float(v) for v in box), 1.0, pts)]


_local = threading.local()


def get_detector():
    """This thread's face detector (created once): marlin.face's mediapipe backend or the fallback."""
    det = getattr(_local, "detector", None)
    if det is None:
        try:
            try:
                from marlin.face import FaceDetector
            except ImportError:
                from marlin.face.detect import FaceDetector
            det = FaceDetector(backend="mediapipe")
        except ImportError:
            log.info("marlin.face not available; using mediapipe face mesh directly")
            det = _MeshOnly()
        _local.detector = det
    return det


def detect_face(rgb: np.ndarray) -> Detection | None:
    """The highest-scoring face with landmarks in an RGB uint8 (H, W, 3) image, or None."""
    for face in get_detector().detect(np.ascontiguousarray(rgb)):
        if face.landmarks is not None and len(face.landmarks) >= 468:
            return Detection(
                tuple(float(v) for v in face.box), float(face.score), np.asarray(face.landmarks, np.float32)
            )
    return None
