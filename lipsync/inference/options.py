"""Options, results and the error type of the dubbing engine.

Everything a dubbing run can be told lives in one frozen dataclass,
:class:`DubOptions`; the CLI, the Python API and the demo all build one.  Its
defaults are the documented defaults (the CLI reads them from here).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

LOOP_MODES = ("pingpong", "loop", "freeze")
FACE_BACKENDS = ("mediapipe", "fan", "haar")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
BLEND_REGIONS = ("lower_face", "mouth", "crop")
# Face detector on every 3rd frame, the face mesh following the face in between: a third less
# CPU for tracking at 720p; boxes on average within 1-1.5% of the face size of detecting every
# frame (docs/usage/infer.md, "Detecting every N-th frame").
DEFAULT_DETECT_EVERY = 3

LoopMode = Literal["pingpong", "loop", "freeze"]


class DubError(ValueError):
    """Bad input for a dubbing run: names the offending path or value and the reason."""


@dataclass(frozen=True)
class FaceSelect:
    """Which face to dub when several are visible.

    ``mode`` is ``"largest"`` (default), ``"index"`` (the ``index``-th face from the left in the
    first frame with a face) or ``"point"`` (the face nearest ``point`` = (x, y) in pixels).
    """

    mode: Literal["largest", "index", "point"] = "largest"
    index: int = 0
    point: tuple[float, float] | None = None

    @classmethod
    def parse(cls, text: str) -> FaceSelect:
        """Parse ``largest``, ``index:N`` / ``N``, or ``point:X,Y`` / ``X,Y``."""
        raw = str(text).strip().lower()
        try:
            if raw == "largest":
                return cls()
            if raw.startswith("index:") or raw.isdigit():
                return cls(mode="index", index=int(raw.split(":", 1)[-1]))
            body = raw.split(":", 1)[1] if raw.startswith("point:") else raw
            x, y = (float(v) for v in body.split(","))
            return cls(mode="point", point=(x, y))
        except ValueError:
            pass
        raise DubError(f"face selection {text!r} is not one of: largest, index:N, point:X,Y")


@dataclass(frozen=True)
class DubOptions:
    """Options of one dubbing run (all optional; defaults are the documented ones)."""

    face_backend: str = "mediapipe"  # detector backend: mediapipe | fan | haar
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # extra pixels (top, bottom, left, right) on the box
    smooth_window: int = 5  # centred smoothing window in frames (1 = no smoothing)
    face: FaceSelect = field(default_factory=FaceSelect)  # face selection for multi-face videos
    box: tuple[int, int, int, int] | None = None  # fixed face box (x1, y1, x2, y2): skips detection
    blend: str = "lower_face"  # soft mask shape: lower_face | mouth | crop
    color_match: bool = False  # match the generated face's colour to the frame around the mask edge
    keep_detail: bool = True  # the frame's own fine detail back where the generator left the face as it was
    resize: float = 1.0  # detect on frames shrunk by this factor (output keeps the input size)
    batch_size: int = 16  # frames per generator batch (also bounds the frames in flight)
    crf: int = 18  # x264 constant rate factor (0 = lossless, 51 = worst)
    preset: str = "veryfast"  # x264 speed preset
    loop: str = "pingpong"  # when the audio outlasts the video: pingpong | loop | freeze
    keep_video: bool = False  # video longer than audio: keep the rest (unchanged frames, silent audio)
    fps: float = 25.0  # frame rate for a still-image input
    max_gap: int | None = None  # bridge detection gaps up to this many frames (None: tracker default)
    detect_every: int = DEFAULT_DETECT_EVERY  # detector on every N-th frame; the face mesh follows between
    threads: bool = True  # decode and encode in background threads

    def __post_init__(self) -> None:
        problems = []
        if self.face_backend not in FACE_BACKENDS:
            problems.append(f"face backend {self.face_backend!r} is not one of {', '.join(FACE_BACKENDS)}")
        if len(self.pads) != 4 or any(int(p) != p for p in self.pads):
            problems.append(f"pads {self.pads!r} must be four integers (top, bottom, left, right)")
        if self.smooth_window < 1:
            problems.append(f"smoothing window {self.smooth_window} must be >= 1")
        if self.box is not None:
            if len(self.box) != 4:
                problems.append(f"box {self.box!r} must be four numbers x1,y1,x2,y2")
            elif not (self.box[2] > self.box[0] >= 0 and self.box[3] > self.box[1] >= 0):
                problems.append(f"box {self.box!r} needs 0 <= x1 < x2 and 0 <= y1 < y2")
        if self.blend not in BLEND_REGIONS:
            problems.append(f"blend region {self.blend!r} is not one of {', '.join(BLEND_REGIONS)}")
        if not (math.isfinite(self.resize) and self.resize >= 1):
            problems.append(f"resize factor {self.resize} must be >= 1")
        if self.batch_size < 1:
            problems.append(f"batch size {self.batch_size} must be >= 1")
        if not 0 <= self.crf <= 51:
            problems.append(f"crf {self.crf} must be in 0..51")
        if self.loop not in LOOP_MODES:
            problems.append(f"loop mode {self.loop!r} is not one of {', '.join(LOOP_MODES)}")
        if not (math.isfinite(self.fps) and 0 < self.fps <= 240):
            problems.append(f"fps {self.fps} must be in (0, 240]")
        if self.max_gap is not None and self.max_gap < 0:
            problems.append(f"max gap {self.max_gap} must be >= 0")
        every = self.detect_every
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            problems.append(f"detect every {self.detect_every!r} frames: must be an integer >= 1")
        if problems:
            raise DubError("; ".join(problems))

    def replace(self, **changes) -> DubOptions:
        """A copy with ``changes`` applied (unknown names raise :class:`DubError`)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise DubError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        if isinstance(changes.get("face"), str):
            changes["face"] = FaceSelect.parse(changes["face"])
        for key in ("pads", "box"):
            if changes.get(key) is not None:
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, **changes)


@dataclass
class StageTimes:
    """Seconds spent in each stage (wall time inside that stage's code)."""

    decode: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    marlin: float = 0.0
    generate: float = 0.0
    blend: float = 0.0
    encode: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass
class DubSummary:
    """What a dubbing run did."""

    output: str | None  # the written file (None for iter_frames)
    frames: int  # output frames written
    faces_found: int  # output frames in which a face was dubbed
    source_frames: int  # frames read from the input video
    fps: float  # output frame rate
    duration: float  # output duration in seconds
    seconds: float  # wall time of the whole run
    stage_times: StageTimes = field(default_factory=StageTimes)
    width: int = 0
    height: int = 0

    @property
    def fps_achieved(self) -> float:
        """Output frames per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """One-line human summary."""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_times.as_dict().items() if v >= 0.05)
        where = f" -> {self.output}" if self.output else ""
        return (f"{self.frames} frames ({self.width}x{self.height} @ {self.fps:g} fps, "
                f"{self.duration:.2f} s), "
                f"faces found in {self.faces_found}, {self.fps_achieved:.1f} fps achieved in "
                f"{self.seconds:.1f} s [{stages}]{where}")
