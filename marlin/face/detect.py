"""Face detection and landmarks behind one interface, with offline backends.

Backends (``available_backends()``):

- ``mediapipe`` (default): BlazeFace detection plus the 478-point face mesh
  (``refine_landmarks=True``); both models ship inside the mediapipe wheel. Detection runs on
  the frame downscaled to ``detect_size``; the mesh runs on a square region around each box.
- ``fan``: face-alignment's S3FD detector and 2D-FAN (68 points). Only usable when the package
  is installed and its weight files are already in the torch hub cache; nothing is downloaded.
- ``haar``: OpenCV's frontal-face Haar cascade. Boxes only (``landmarks`` is ``None``).

Coordinates are continuous pixel coordinates of the input image: ``x`` in ``[0, W]`` from the
left edge, ``y`` in ``[0, H]`` from the top edge (pixel ``i`` covers ``[i, i + 1)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np


@contextlib.contextmanager
def _quiet_native_stderr(enabled: bool = True):
    """Silence C++ log lines written straight to file descriptor 2.

    mediapipe's graphs print TFLite/absl warnings ("Feedback manager requires a model with a
    single signature...") on their first run; they are noise for users, and Python-level
    logging cannot reach them.  Set LIPSYNC_MEDIAPIPE_LOGS=1 to see them.
    """
    if not enabled or os.environ.get("LIPSYNC_MEDIAPIPE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

__all__ = [
    "FAN_WEIGHT_FILES",
    "DetectorConfig",
    "Face",
    "FaceBackendError",
    "FaceDetector",
    "available_backends",
]

log = logging.getLogger(__name__)

# Files face-alignment (>= 1.4, torch >= 2) loads from <torch hub dir>/checkpoints.
FAN_WEIGHT_FILES = ("s3fd-619a316812.pth", "2DFAN4-cd938726ad.zip")


class FaceBackendError(RuntimeError):
    """A detector backend cannot be used here (package or weight files missing)."""


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes
    ----------
    box : tuple of 4 float
        ``(x1, y1, x2, y2)`` in pixels of the image given to ``detect``.
    score : float
        Detector confidence in [0, 1].
    landmarks : np.ndarray or None
        ``(478, 2)`` float32 (mediapipe mesh) or ``(68, 2)`` (fan) x, y pixels; ``None`` for haar.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings shared by all backends (a backend ignores what it does not use)."""

    min_score: float = 0.5  # drop detections below this confidence
    max_faces: int = 6  # keep at most this many faces (highest scores first)
    detect_size: int = 640  # detect on the frame downscaled so its longer side is at most this (0: never)
    model: str = "full"  # mediapipe detector: "full" (faces up to ~5 m) or "short" (within ~2 m)
    roi_scale: float = 1.7  # mesh/FAN region side relative to max(box w, h)
    roi_size: int = 256  # the region is resized to this many pixels before the mesh runs
    video: bool = False  # mediapipe mesh in tracking mode: only for ONE face followed over consecutive frames
    device: str = "cpu"  # torch device for the fan backend


def _square_roi(rgb: np.ndarray, box, scale: float, size: int) -> tuple[np.ndarray, float, float, float]:
    """Square region of side ``scale * max(w, h)`` around ``box``, zero padded, resized to ``size``.

    Returns the (size, size, 3) image and (x0, y0, side) so that frame = x0 + crop * side / size.
    """
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * scale
    x0, y0 = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    k = size / side
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float64)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    roi = cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return roi, x0, y0, side


class _Backend:
    name: ClassVar[str]
    has_landmarks: ClassVar[bool] = False

    def __init__(self, config: DetectorConfig):
        self.config = config

    def boxes(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        raise NotImplementedError

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass


class _MediapipeBackend(_Backend):
    name = "mediapipe"
    has_landmarks = True

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        if config.model not in ("full", "short"):
            raise ValueError(f"mediapipe model must be 'full' or 'short', got {config.model!r}")
        self._det = None
        self._mesh = None
        self._det_warm = self._mesh_warm = False

    def _solutions(self):
        try:
            from mediapipe.python import solutions
        except ImportError as e:  # pragma: no cover - mediapipe is a declared dependency of [face]
            raise FaceBackendError("the mediapipe backend needs `pip install mediapipe==0.10.21`") from e
        return solutions

    def boxes(self, rgb):
        if self._det is None:
            self._det = self._solutions().face_detection.FaceDetection(
                model_selection=1 if self.config.model == "full" else 0,
                min_detection_confidence=self.config.min_score)
        h, w = rgb.shape[:2]
        small = rgb
        limit = self.config.detect_size
        if limit and max(h, w) > limit:
            k = limit / max(h, w)
            small = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))),
                               interpolation=cv2.INTER_AREA)
        with _quiet_native_stderr(not self._det_warm):  # the first run prints native warnings
            result = self._det.process(np.ascontiguousarray(small))
        self._det_warm = True
        out = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box  # relative coordinates survive the resize
            x1, y1 = b.xmin * w, b.ymin * h
            out.append(((x1, y1, x1 + b.width * w, y1 + b.height * h), float(d.score[0])))
        return out

    def landmarks(self, rgb, box):
        if self._mesh is None:
            self._mesh = self._solutions().face_mesh.FaceMesh(
                static_image_mode=not self.config.video, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=self.config.min_score, min_tracking_confidence=0.5)
        size = self.config.roi_size
        roi, x0, y0, side = _square_roi(rgb, box, self.config.roi_scale, size)
        with _quiet_native_stderr(not self._mesh_warm):
            result = self._mesh.process(roi)
        self._mesh_warm = True
        if not result.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], np.float32)
        pts *= np.float32(side)
        pts += np.array([x0, y0], np.float32)
        return pts

    def close(self):
        for attr in ("_det", "_mesh"):
            obj = getattr(self, attr)
            if obj is not None:
                obj.close()
                setattr(self, attr, None)
        self._det_warm = self._mesh_warm = False


class _HaarBackend(_Backend):
    name = "haar"

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceBackendError(f"cannot load the OpenCV Haar cascade {path}")

    def boxes(self, rgb):
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        k = 1.0
        limit = self.config.detect_size
        if limit and max(h, w) > limit:
            k = limit / max(h, w)
            gray = cv2.resize(gray, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        rects, neighbours = self._cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=5,
                                                            minSize=(24, 24))
        out = []
        for (x, y, bw, bh), n in zip(np.reshape(rects, (-1, 4)), np.ravel(neighbours)):
            score = float(min(1.0, n / 20.0))  # more overlapping hits -> more confident
            if score >= self.config.min_score * 0.5:
                out.append(((x / k, y / k, (x + bw) / k, (y + bh) / k), score))
        return out


class _FanBackend(_Backend):
    name = "fan"
    has_landmarks = True

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        import torch

        folder = Path(torch.hub.get_dir()) / "checkpoints"
        missing = [f for f in FAN_WEIGHT_FILES if not (folder / f).is_file()]
        if missing:
            raise FaceBackendError(
                f"the fan backend needs the face-alignment weight files {', '.join(missing)} in {folder} "
                "(copy them there, or set TORCH_HOME; nothing is downloaded), or use backend "
                "'mediapipe' or 'haar'")
        try:
            import face_alignment
        except ImportError as e:
            raise FaceBackendError(
                "the fan backend needs the face-alignment package (`pip install face-alignment`); "
                f"its weights {', '.join(FAN_WEIGHT_FILES)} are present in {folder}") from e
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        self._fa = face_alignment.FaceAlignment(kind, device=config.device, face_detector="sfd")

    def boxes(self, rgb):
        dets = self._fa.face_detector.detect_from_image(np.ascontiguousarray(rgb).copy())
        return [((float(d[0]), float(d[1]), float(d[2]), float(d[3])), float(d[4])) for d in dets
                if float(d[4]) >= self.config.min_score]

    def landmarks(self, rgb, box):
        pts = self._fa.get_landmarks_from_image(np.ascontiguousarray(rgb), detected_faces=[np.asarray(box)])
        return None if not pts else np.asarray(pts[0], np.float32)[:, :2]


_BACKENDS: dict[str, type[_Backend]] = {b.name: b for b in (_MediapipeBackend, _FanBackend, _HaarBackend)}


def available_backends() -> list[str]:
    """Names accepted by ``FaceDetector(backend=...)``."""
    return list(_BACKENDS)


class FaceDetector:
    """Detect faces (and their landmarks) in RGB images.

    Models are created on first use and reused across calls; call ``close()`` (or use the
    detector as a context manager) to free them.

    Parameters
    ----------
    backend : str
        One of ``available_backends()``: "mediapipe" (default), "fan", "haar".
    config : DetectorConfig, optional
    **overrides
        Fields of ``DetectorConfig`` to change, e.g. ``FaceDetector(min_score=0.3)``.

    Examples
    --------
    >>> with FaceDetector() as det:                        # doctest: +SKIP
    ...     faces = det.detect(rgb)                        # list[Face], best first
    """

    def __init__(self, backend: str = "mediapipe", config: DetectorConfig | None = None, **overrides):
        if backend not in _BACKENDS:
            raise ValueError(f"unknown face detector backend {backend!r}; "
                             f"choose one of {available_backends()}")
        config = replace(config or DetectorConfig(), **overrides)
        self.backend = backend
        self.config = config
        self._impl: _Backend | None = _BACKENDS[backend](config)

    @property
    def has_landmarks(self) -> bool:
        """Whether this backend gives landmarks (mediapipe: 478 points, fan: 68)."""
        return _BACKENDS[self.backend].has_landmarks

    def _backend(self) -> _Backend:
        if self._impl is None:
            raise RuntimeError("FaceDetector is closed")
        return self._impl

    @staticmethod
    def _check(rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {desc}")
        return np.ascontiguousarray(rgb)

    def detect(self, rgb: np.ndarray, landmarks: bool = True) -> list[Face]:
        """All faces in ``rgb`` ((H, W, 3) uint8 RGB), highest score first.

        With ``landmarks=False`` only boxes are computed (cheaper; see ``landmarks``).
        """
        rgb = self._check(rgb)
        impl = self._backend()
        found = sorted(impl.boxes(rgb), key=lambda bs: -bs[1])[: self.config.max_faces]
        faces = []
        for box, score in found:
            lm = impl.landmarks(rgb, box) if landmarks and impl.has_landmarks else None
            faces.append(Face(tuple(float(v) for v in box), score, lm))
        return faces

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray | None:
        """Landmarks of the face in ``box`` ((x1, y1, x2, y2)); ``None`` when none are found or
        the backend has none. (478, 2) float32 for mediapipe, (68, 2) for fan."""
        impl = self._backend()
        return impl.landmarks(self._check(rgb), tuple(float(v) for v in box)) if impl.has_landmarks else None

    def warmup(self) -> None:
        """Build the backend's models now instead of on the first real frame.

        mediapipe creates its detection and mesh graphs on first use (about 0.6 s on a CPU core);
        a caller with other start-up work (the dubbing job computes the audio features meanwhile)
        can run this in a thread so the two overlap.  The blank frame has no face, so no tracking
        state is left behind.
        """
        impl = self._backend()
        blank = np.zeros((64, 64, 3), np.uint8)
        impl.boxes(blank)
        if impl.has_landmarks:
            impl.landmarks(blank, (16.0, 16.0, 48.0, 48.0))

    def close(self) -> None:
        """Free the backend's models (the detector cannot be used afterwards)."""
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaceDetector(backend={self.backend!r}, config={self.config})"
