"""Follow one face through a video: target selection, gap bridging, centred smoothing.

Per frame the tracker picks the target among the detections (the first time by
``TrackConfig.target``; afterwards the detection nearest the target's last box), then

1. bridges gaps of at most ``max_gap`` frames without the target by linear interpolation
   between the detections around them (a gap at the very start or end is held from the nearest
   detection); longer gaps are marked ``found=False`` so those frames can pass through untouched;
2. smooths boxes and landmarks with a centred window over past AND future frames of the same
   run of found frames (the public Wav2Lip averages the next 5 boxes, which lags behind a moving
   face and ignores where it came from). ``smoothing="linear"`` fits a local line, which equals
   the centred mean inside a run and stays unbiased near the ends of a run; ``"mean"`` averages.

With ``detect_every=N`` the detector runs on every N-th frame only; in between, the mesh is
run in the previous box's region and the box moves and scales with the landmarks (faster).

Everything streams: ``FaceTracker`` holds at most ``max_gap + window // 2 + 1`` frames of state and
returns each frame's ``Track`` once its future context is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .detect import Face, FaceDetector

__all__ = ["FaceTracker", "Track", "TrackConfig", "select_face", "smooth_series", "track", "track_faces"]

SMOOTHING = ("linear", "mean")


@dataclass(frozen=True)
class TrackConfig:
    """How the tracker picks, bridges and smooths."""

    target: str | int | tuple[float, float] = "largest"  # "largest", index in left-to-right order, or (x, y)
    box_window: int = 5  # centred smoothing window for boxes, in frames (odd; 1 = no smoothing)
    landmark_window: int = 3  # centred window for landmarks (keep small: lips move fast)
    smoothing: str = "linear"  # "linear" (local line fit) or "mean"
    max_gap: int = 6  # frames without the target that are bridged; longer gaps become found=False
    max_jump: float = 0.6  # largest centre move between observations, in box sizes, to be the same face
    detect_every: int = 1  # push(): run the detector every N frames, follow the mesh in between

    def __post_init__(self):
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {self.smoothing!r}")
        for name in ("box_window", "landmark_window"):
            v = getattr(self, name)
            if v < 1 or v % 2 == 0:
                raise ValueError(f"{name} must be a positive odd number of frames, got {v}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        t = self.target
        ok = t == "largest" or (isinstance(t, int) and not isinstance(t, bool) and t >= 0) or (
            isinstance(t, Sequence) and not isinstance(t, str) and len(t) == 2)
        if not ok:
            raise ValueError(f"target must be 'largest', a face index >= 0 or an (x, y) point, got {t!r}")


@dataclass(frozen=True, eq=False)
class Track:
    """The target face in one frame.

    Attributes
    ----------
    index : int
        Frame index (0-based, in the order frames were given).
    box : np.ndarray or None
        (4,) float64 ``(x1, y1, x2, y2)`` after smoothing; ``None`` when not found.
    landmarks : np.ndarray or None
        (N, 2) float32 after smoothing; ``None`` when not found or the backend has none.
    found : bool
        False for frames in a gap longer than ``max_gap``: leave those frames untouched.
    detected : bool
        True when the detector saw the target in this very frame (False when bridged).
    """

    index: int
    box: np.ndarray | None
    landmarks: np.ndarray | None = field(default=None)
    found: bool = False
    detected: bool = False


def _weights(offsets: np.ndarray, method: str) -> np.ndarray:
    """Weights w with sum(w * y) = the smoothed value at offset 0 of samples at ``offsets``."""
    n = len(offsets)
    d = offsets.astype(np.float64)
    if method == "mean" or n < 3:
        return np.full(n, 1.0 / n)
    dm = d.mean()
    s = ((d - dm) ** 2).sum()
    return 1.0 / n - dm * (d - dm) / s  # local least-squares line evaluated at 0


def smooth_series(values: np.ndarray, window: int, method: str = "linear",
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Centred smoothing along axis 0, separately within each run of ``valid`` frames.

    Parameters
    ----------
    values : np.ndarray
        (T, ...) float.
    window : int
        Odd window length in frames.
    method : str
        "linear" or "mean" (see module notes).
    valid : np.ndarray, optional
        (T,) bool; invalid frames are returned unchanged and split runs.

    Returns
    -------
    np.ndarray
        (T, ...) float64.
    """
    x = np.asarray(values, np.float64)
    out = x.copy()
    t_len = len(x)
    ok = np.ones(t_len, bool) if valid is None else np.asarray(valid, bool)
    r = window // 2
    t = 0
    while t < t_len:
        if not ok[t]:
            t += 1
            continue
        end = t
        while end < t_len and ok[end]:
            end += 1
        for i in range(t, end):
            lo, hi = max(t, i - r), min(end, i + r + 1)
            w = _weights(np.arange(lo - i, hi - i), method)
            out[i] = np.tensordot(w, x[lo:hi], axes=1)
        t = end
    return out


def select_face(faces: Sequence[Face], target: str | int | tuple[float, float] = "largest",
                previous: Sequence[float] | None = None, max_jump: float = 0.6) -> int | None:
    """Index into ``faces`` of the target, or ``None``.

    With ``previous`` (the target's last box) the nearest face whose centre moved at most
    ``max_jump`` box sizes and whose size changed less than 2x is chosen. Otherwise ``target``
    decides: "largest" area, an index in left-to-right order of box centres, or the face whose
    centre is nearest an (x, y) point.
    """
    if not faces:
        return None
    boxes = np.array([f.box for f in faces], np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if previous is not None:
        p = np.asarray(previous, np.float64)
        pc, ps = (p[:2] + p[2:]) / 2, max(p[2] - p[0], p[3] - p[1], 1e-6)
        dist = np.hypot(*(centres - pc).T) / ps
        ratio = sizes / ps
        ok = (dist <= max_jump) & (ratio > 0.5) & (ratio < 2.0)
        return int(np.argmin(np.where(ok, dist, np.inf))) if ok.any() else None
    if target == "largest":
        return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    if isinstance(target, int):
        order = np.argsort(centres[:, 0], kind="stable")
        return int(order[target]) if target < len(order) else None
    pt = np.asarray(target, np.float64)
    return int(np.argmin(np.hypot(*(centres - pt).T)))


@dataclass
class _Item:
    index: int
    box: np.ndarray | None
    lm: np.ndarray | None
    found: bool
    detected: bool


class FaceTracker:
    """Streaming tracker: feed frames (``push``) or detections (``update``), collect ``Track``s.

    Each call returns the tracks that became final (in frame order, possibly none, delayed by at
    most ``max_gap + window // 2 + 1`` frames); ``flush()`` returns the rest at the end.

    Parameters
    ----------
    config : TrackConfig, optional
    detector : FaceDetector, optional
        Used by ``push``; by default a mediapipe detector in video mode is created on first use
        (and closed by ``close``). Boxes are detected on the frame, landmarks only for the target.
    **overrides
        Fields of ``TrackConfig``.
    """

    def __init__(self, config: TrackConfig | None = None, detector: FaceDetector | None = None, **overrides):
        self.config = replace(config or TrackConfig(), **overrides)
        self._detector = detector
        self._own_detector = False
        self._t = 0
        self._last: tuple[int, np.ndarray, np.ndarray | None] | None = None  # last raw observation
        self._lost = False  # a long gap ended the previous run: no holding backwards
        self._has_lm = False
        self._since_detect = 0
        self._pending: list[int] = []
        self._run: list[_Item] = []
        self._emit = 0

    # ---------------------------------------------------------------- input
    def push(self, rgb: np.ndarray) -> list[Track]:
        """Detect in one RGB uint8 frame and advance the tracker."""
        if self._detector is None:
            self._detector = FaceDetector("mediapipe", video=True)
            self._own_detector = True
        followed = self._follow(rgb)
        if followed is not None:
            return followed
        self._since_detect = 0
        faces = self._detector.detect(rgb, landmarks=False)
        i = select_face(faces, self.config.target, self._previous_box(), self.config.max_jump)
        if i is None:
            return self._observe(None, None)
        lm = self._detector.landmarks(rgb, faces[i].box) if self._detector.has_landmarks else None
        if self._detector.has_landmarks and lm is None:
            return self._observe(None, None)
        return self._observe(np.asarray(faces[i].box, np.float64), lm)

    def _follow(self, rgb: np.ndarray) -> list[Track] | None:
        """Between detections: landmarks in the last box's region; the box moves and scales with them."""
        self._since_detect += 1
        last = self._last
        if (self._since_detect >= self.config.detect_every or last is None or last[0] != self._t - 1
                or last[2] is None or not self._detector.has_landmarks):
            return None
        lm = self._detector.landmarks(rgb, last[1])
        if lm is None:
            return None
        prev = last[2].astype(np.float64)
        cur = lm.astype(np.float64)
        c0, c1 = prev.mean(0), cur.mean(0)
        s0 = np.sqrt(((prev - c0) ** 2).sum(1).mean())
        s1 = np.sqrt(((cur - c1) ** 2).sum(1).mean())
        k = s1 / s0 if s0 > 0 else 1.0
        box = np.concatenate([(last[1][:2] - c0) * k + c1, (last[1][2:] - c0) * k + c1])
        return self._observe(box, lm)

    def update(self, faces: Sequence[Face]) -> list[Track]:
        """Advance the tracker with one frame's detections (no detector involved)."""
        i = select_face(faces, self.config.target, self._previous_box(), self.config.max_jump)
        if i is None:
            return self._observe(None, None)
        return self._observe(np.asarray(faces[i].box, np.float64), faces[i].landmarks)

    def flush(self) -> list[Track]:
        """Finish: bridge or drop the trailing gap and emit every remaining track."""
        out: list[Track] = []
        if self._pending:
            if self._last is not None:
                _, box, lm = self._last
                items = [_Item(t, box, lm, True, False) for t in self._pending]
            else:
                items = [_Item(t, None, None, False, False) for t in self._pending]
            self._pending = []
            for item in items:
                out += self._smooth(item)
        out += self._end_run()
        return out

    def close(self) -> None:
        if self._own_detector and self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- stage 1: gaps
    def _previous_box(self) -> np.ndarray | None:
        return None if self._last is None else self._last[1]

    def _observe(self, box: np.ndarray | None, lm: np.ndarray | None) -> list[Track]:
        t = self._t
        self._t += 1
        if box is not None and lm is None and self._has_lm:
            box = None  # landmarks failed where they used to work: treat as a miss
        out: list[Track] = []
        if box is None:
            if self._lost:
                return self._smooth(_Item(t, None, None, False, False))
            self._pending.append(t)
            if len(self._pending) > self.config.max_gap:
                for p in self._pending:
                    out += self._smooth(_Item(p, None, None, False, False))
                self._pending, self._last, self._lost = [], None, True
            return out
        lm = None if lm is None else np.asarray(lm, np.float32)
        self._has_lm = self._has_lm or lm is not None
        if self._pending:
            if self._last is not None:
                t0, b0, l0 = self._last
                for p in self._pending:
                    a = (p - t0) / (t - t0)
                    lp = None if (l0 is None or lm is None) else ((1 - a) * l0 + a * lm).astype(np.float32)
                    out += self._smooth(_Item(p, (1 - a) * b0 + a * box, lp, True, False))
            else:  # short gap at the very start: hold the first detection
                for p in self._pending:
                    out += self._smooth(_Item(p, box, lm, True, False))
            self._pending = []
        self._last, self._lost = (t, box, lm), False
        return out + self._smooth(_Item(t, box, lm, True, True))

    # ---------------------------------------------------------------- stage 2: smoothing
    def _radius(self) -> int:
        return max(self.config.box_window, self.config.landmark_window) // 2

    def _smooth(self, item: _Item) -> list[Track]:
        if not item.found:
            return self._end_run() + [Track(item.index, None, None, False, False)]
        self._run.append(item)
        out = []
        r = self._radius()
        while self._emit + r < len(self._run):
            out.append(self._final(self._emit))
            self._emit += 1
        drop = self._emit - r
        if drop > 0:
            del self._run[:drop]
            self._emit -= drop
        return out

    def _end_run(self) -> list[Track]:
        out = [self._final(p) for p in range(self._emit, len(self._run))]
        self._run, self._emit = [], 0
        return out

    def _final(self, p: int) -> Track:
        run, cfg = self._run, self.config
        item = run[p]

        def window(radius: int, key: str):
            lo, hi = max(0, p - radius), min(len(run), p + radius + 1)
            idx = [j for j in range(lo, hi) if getattr(run[j], key) is not None]
            w = _weights(np.array([run[j].index - item.index for j in idx]), cfg.smoothing)
            return sum(wj * getattr(run[j], key).astype(np.float64) for wj, j in zip(w, idx))

        box = window(cfg.box_window // 2, "box")
        lm = None if item.lm is None else window(cfg.landmark_window // 2, "lm").astype(np.float32)
        return Track(item.index, np.asarray(box, np.float64), lm, True, item.detected)


def track_faces(detections: Iterable[Sequence[Face]], config: TrackConfig | None = None,
                **overrides) -> list[Track]:
    """Tracks for per-frame detection lists (pure: no images, no detector)."""
    tracker = FaceTracker(config, **overrides)
    out: list[Track] = []
    for faces in detections:
        out += tracker.update(faces)
    return out + tracker.flush()


def track(frames: Iterable[np.ndarray], detector: FaceDetector | None = None,
          config: TrackConfig | None = None, **overrides) -> Iterator[Track]:
    """Detect and track the target through RGB uint8 frames; yields one ``Track`` per frame, in order."""
    with FaceTracker(config, detector, **overrides) as tracker:
        for rgb in frames:
            yield from tracker.push(rgb)
        yield from tracker.flush()
