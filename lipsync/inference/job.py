"""Checking the inputs of a dubbing run and loading its generator.

Every check that can fail runs here, before any output exists: paths, the video's stream, the
audio's stream and length, the output folder, the face backend's weights and the checkpoint.
Each failure is one :class:`DubError` (or ``AudioError`` / ``VideoError``) naming the path
and the reason.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audio import SAMPLE_RATE, AudioError, load_audio, mel_window_starts, melspectrogram
from marlin.video import VideoError

from .engine import MelSource
from .faces import make_detector
from .options import DubError, DubOptions
from .plan import output_frame_count
from .source import FrameSource

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "lipsync_default.safetensors"
MIN_AUDIO_SECONDS = 0.2  # one 16-column mel window
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov")


def audio_convention(meta: dict[str, Any]) -> str:
    """The mel window convention recorded in checkpoint metadata (default ``"inference"``)."""
    for key in ("audio_convention", "mel_convention", "audio_window_convention", "convention"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    return "inference"


def load_generator(path: str | os.PathLike | None) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """Load a generator checkpoint: (model, metadata, path). ``None`` is the shipped default."""
    p = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if path is None and not p.is_file():
        raise DubError(f"the default checkpoint {p} is missing (it ships with the repository once "
                       "trained); pass one with --checkpoint PATH (our .safetensors, or the public "
                       "wav2lip.pth / wav2lip_gan.pth)")
    if not p.exists():
        raise DubError(f"checkpoint {p}: no such file")
    if p.is_dir():
        raise DubError(f"checkpoint {p}: is a directory, not a checkpoint file")
    from lipsync import checkpoints

    try:
        loaded = checkpoints.load(p, kind=checkpoints_generators())
    except checkpoints.CheckpointError as e:
        raise DubError(_first_line(e)) from e
    except (ValueError, KeyError, OSError, RuntimeError, EOFError, TypeError) as e:
        raise DubError(f"checkpoint {p}: cannot be loaded ({_first_line(e)})") from e
    model = getattr(loaded, "model", None)
    meta = dict(getattr(loaded, "meta", None) or {})
    if model is None or not hasattr(model, "frames_per_window"):
        kind = type(model).__name__ if model is not None else "nothing"
        raise DubError(f"checkpoint {p}: holds a {kind}, not a lip-sync generator "
                       "(Wav2Lip or MarlinLipGenerator)")
    return model, meta, str(p)


def checkpoints_generators() -> tuple[str, ...]:
    """Architecture keys of the generators (what ``--checkpoint`` must hold)."""
    from lipsync.models import GENERATORS

    return tuple(GENERATORS)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(out: Path, inputs: list[Path]) -> Path:
    """The output path is an mp4 in an existing, writable folder, and none of the inputs."""
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DubError(f"output {out}: must end in .mp4 (h264 + aac in an mp4 container)")
    if out.is_dir():
        raise DubError(f"output {out}: is a directory")
    for p in inputs:
        if _same_file(out, p) or out.resolve() == p.resolve():
            raise DubError(f"output {out}: is also an input; choose another output path")
    folder = out.parent
    if not folder.is_dir():
        raise DubError(f"output {out}: folder {folder} does not exist")
    try:  # os.access says yes to root on read-only mounts; really try
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.stem}.", suffix=".probe"):
            pass
    except OSError as e:
        raise DubError(f"output {out}: folder {folder} is not writable ({e.strerror or e})") from e
    return out


@dataclass
class Job:
    """One checked dubbing run."""

    video: Path
    audio: Path
    out: Path | None
    options: DubOptions
    source: FrameSource
    mels: MelSource
    n_out: int  # frames carrying the new audio
    audio_seconds: float
    detector: Any  # the face detector (or None with a fixed box)

    @property
    def total_frames(self) -> int:
        """Frames the run will write (an estimate when ``keep_video`` keeps a longer video)."""
        if self.options.keep_video and not self.source.is_image:
            return max(self.n_out, self.source.info.n_frames)
        return self.n_out

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None


def _start_warmup(detector: Any) -> threading.Thread | None:
    """Build ``detector``'s models in a background thread (None: no detector)."""
    if detector is None:
        return None

    def work() -> None:
        try:
            detector.warmup()
        except Exception as e:  # noqa: BLE001 - the first real frame raises it again, where it is reported
            log.debug("face detector warm-up failed: %s", e)

    thread = threading.Thread(target=work, name="lipsync-detector-warmup", daemon=True)
    thread.start()
    return thread


def check_paths(video: str | os.PathLike, audio: str | os.PathLike,
                out: str | os.PathLike | None) -> tuple[Path, Path, Path | None]:
    """Cheap checks first: both inputs exist and are files; the output can be written."""
    v, a = Path(video), Path(audio)
    for p, what in ((v, "video"), (a, "audio")):
        if not p.exists():
            raise DubError(f"{what} {p}: no such file")
        if p.is_dir():
            raise DubError(f"{what} {p}: is a directory, not a file")
    return v, a, (None if out is None else check_output(Path(out), [v, a]))


def prepare_job(video: str | os.PathLike, audio: str | os.PathLike, out: str | os.PathLike | None,
                options: DubOptions, convention: str) -> Job:
    """Check the inputs and build a :class:`Job` (``out=None``: no output file, for streaming)."""
    v, a, out = check_paths(video, audio, out)
    try:
        source = FrameSource(v, image_fps=options.fps, keep_planes=True)  # unchanged pixels written as stored
    except VideoError as e:
        raise DubError(f"video {e}") from e
    try:
        wav = load_audio(a, SAMPLE_RATE)
    except AudioError as e:
        raise DubError(f"audio {e}") from e
    seconds = len(wav) / SAMPLE_RATE
    if seconds < MIN_AUDIO_SECONDS:
        raise DubError(f"audio {a}: is {seconds:.3f} s long; at least {MIN_AUDIO_SECONDS} s "
                       "(one mel window) is needed")
    if not np.isfinite(wav).all():
        raise DubError(f"audio {a}: contains NaN or infinite samples")
    n_out = output_frame_count(seconds, source.fps)
    if options.box is not None:
        w, h = source.size
        if options.box[2] > w or options.box[3] > h:
            raise DubError(f"box {options.box} lies outside the {w}x{h} video")
    detector = make_detector(options)
    # The detector's models are built on first use (mediapipe: ~0.6 s of one core): build them
    # while the audio features are computed.
    warming = _start_warmup(detector)
    try:
        try:
            mel = melspectrogram(wav)
            starts = mel_window_starts(mel, source.fps, n_frames=n_out, convention=convention)
        finally:
            if warming is not None:
                warming.join()
    except AudioError as e:
        detector.close()
        raise DubError(f"audio {a}: {e}") from e
    del wav
    return Job(v, a, out, options, source, MelSource(mel, starts), n_out, seconds, detector)
