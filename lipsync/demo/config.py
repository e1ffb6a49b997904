"""The demo's settings, limits and option parsing (pure: no media, no models, no Gradio).

:class:`DemoConfig` holds how the server runs and what it accepts; :func:`build_options` turns
the values of the *Advanced options* panel into the :class:`DubOptions` that
``python -m lipsync.infer`` builds from its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..inference.options import PRECISIONS, DubOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".tar", ".bin", ".model")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac")
OUTPUT_SIZES = {"original": None, "1080p": 1080, "720p": 720, "480p": 480, "360p": 360, "240p": 240}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow")


class DemoError(ValueError):
    """A request the demo refuses: names the file or value and the reason."""


@dataclass(frozen=True)
class DemoConfig:
    """How the demo server runs (``python -m lipsync.demo`` builds one from its flags)."""

    checkpoints_dir: Path = REPO_ROOT / "checkpoints"  # the files offered in the checkpoint menus
    assets_dir: Path = REPO_ROOT / "demos" / "assets"  # bundled example media
    checkpoint: str | None = None  # menu choice at start (default lipsync_default.safetensors or the first)
    device: str = "auto"  # auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps
    precision: str = "auto"  # auto, fp32, fp16, bf16
    max_upload_mb: float = 100.0  # largest accepted upload, MiB
    max_seconds: float = 60.0  # longest accepted video / audio, seconds
    max_pixels: int = 3840 * 2160  # largest accepted frame, width * height
    concurrency: int = 1  # requests running at once (dubbing and MARLIN share the limit)
    max_queue: int = 16  # requests waiting; more are refused with a "queue is full" message
    work_dir: Path | None = None  # outputs of each request (default <tmp>/lipsync-demo)
    keep_hours: float = 2.0  # request folders older than this are deleted
    cached_models: int = 2  # loaded models kept in memory, per tab

    def __post_init__(self) -> None:
        problems = []
        if min(self.max_upload_mb, self.max_seconds, self.max_pixels, self.keep_hours) <= 0:
            problems.append("upload size, duration, pixel and age limits must be positive")
        if min(self.concurrency, self.max_queue, self.cached_models) < 1:
            problems.append("concurrency, queue size and model cache must be >= 1")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if problems:
            raise DemoError("; ".join(problems))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def no_progress(*args: Any, **kwargs: Any) -> None:
    """The progress callback of a handler called without one (scripts, tests)."""


def list_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Names of the checkpoint files directly in ``folder`` (sorted; none when it is missing)."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() in CHECKPOINT_SUFFIXES)


def find_examples(folder: str | os.PathLike) -> list[list[str | None]]:
    """Example rows ``[video, photo, speech]`` from a folder of media: every video or photo with
    the speech file of the same stem, else the first speech file.  Rows need a speech file."""
    p = Path(folder)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else []
    speech = [f for f in files if f.suffix.lower() in AUDIO_SUFFIXES]
    if not speech:
        return []
    rows = []
    for f in files:
        kind = f.suffix.lower()
        if kind in VIDEO_SUFFIXES or kind in IMAGE_SUFFIXES:
            match = next((a for a in speech if a.stem == f.stem), speech[0])
            rows.append([str(f), None, str(match)] if kind in VIDEO_SUFFIXES else [None, str(f), str(match)])
    return rows


def parse_numbers(text: str | None, n: int, what: str) -> tuple[int, ...] | None:
    """``"1, 2, 3, 4"`` -> (1, 2, 3, 4); empty -> None.  Raises :class:`DemoError`."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(round(float(v))) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise DemoError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _optional_int(value: str | float | None, what: str) -> int | None:
    if value is None or not str(value).strip():
        return None
    try:
        return int(round(float(value)))
    except ValueError:
        raise DemoError(f"{what} must be a whole number or empty, got {value!r}") from None


def build_options(face_backend: str = "mediapipe", face: str = "largest", box: str = "",
                  pads: str = "0,10,0,0", smooth: float = 5, max_gap: str | float | None = None,
                  resize: float = 1.0, blend: str = "lower_face", color_match: bool = False,
                  loop: str = "pingpong", keep_video: bool = False, fps: float = 25.0, crf: float = 18,
                  preset: str = "veryfast", batch_size: float = 16, keep_detail: bool = True) -> DubOptions:
    """The :class:`DubOptions` of the advanced panel; each field means what its CLI flag means
    (``--face-backend --face --box --pads --smooth --max-gap --resize --blend --color-match --loop
    --keep-video --fps --crf --preset --batch-size --keep-detail``).  Bad values raise
    ``DubError``/``DemoError``."""
    return DubOptions().replace(
        face_backend=face_backend, face=str(face or "largest"), box=parse_numbers(box, 4, "face box"),
        pads=parse_numbers(pads, 4, "pads") or (0, 0, 0, 0), smooth_window=int(smooth),
        max_gap=_optional_int(max_gap, "max gap"), resize=float(resize), blend=blend,
        color_match=bool(color_match), loop=loop, keep_video=bool(keep_video), fps=float(fps or 25),
        crf=int(crf), preset=preset, batch_size=int(batch_size), keep_detail=bool(keep_detail))
