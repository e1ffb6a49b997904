"""Re-render a synthetic clip's face speaking other audio, and find the mouth an audio demands."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clip import ClipSpec, read_sidecar
from .faces import build_face
from .render import render_frames
from .speech import Phoneme
from .visemes import mouth_from_audio, mouth_track

__all__ = ["Rendering", "mouth_for_audio", "render_face", "speak"]

log = logging.getLogger(__name__)


@dataclass
class Rendering:
    """Frames of a face speaking a mouth track: (T, H, W, 3) uint8 and (T, 4) boxes in pixels."""

    frames: np.ndarray
    face_box: np.ndarray
    mouth_box: np.ndarray
    mouth: np.ndarray  # (T, 4) the track that was rendered


def render_face(spec: ClipSpec, mouth: np.ndarray) -> Rendering:
    """Render ``spec``'s face (same identity, head motion, blinks, light) speaking ``mouth`` (T, 4).

    Needs no espeak-ng: only the identity and motion of ``spec`` are used.  Frame ``i`` has the
    same head pose as frame ``i`` of the original clip.
    """
    mouth = np.asarray(mouth, np.float32)
    face = build_face(spec.identity, spec.size)
    out = list(render_frames(face, mouth, spec.motion, spec.fps))
    if not out:
        h, w = spec.size
        return Rendering(
            np.zeros((0, h, w, 3), np.uint8),
            np.zeros((0, 4), np.float32),
            np.zeros((0, 4), np.float32),
            mouth,
        )
    return Rendering(
        np.stack([r.image for r in out]),
        np.stack([r.face_box for r in out]),
        np.stack([r.mouth_box for r in out]),
        mouth,
    )


def mouth_for_audio(
    audio: str | Path, fps: float = 25.0, articulation: float = 1.0, n_frames: int | None = None
) -> tuple[np.ndarray, str]:
    """The mouth track (T, 4) an audio file demands, and where it came from.

    A synthetic clip (its ``.json`` sidecar next to ``audio``) gives the exact track from its
    phoneme timings (source ``"phonemes"``).  Any other audio falls back to a loudness-based
    estimate (``"estimate"``, with a warning).  ``n_frames`` defaults to the audio length.

    Raises
    ------
    ValueError / audio.AudioError : the file cannot be read.
    """
    audio = Path(audio)
    sidecar = audio if audio.suffix == ".json" else audio.with_suffix(".json")
    if sidecar.exists():
        spec, side = read_sidecar(sidecar)
        phonemes = [Phoneme(s, float(a), float(b)) for s, a, b in side["phonemes"]]
        n = spec.n_frames if n_frames is None else n_frames
        duration_frames = n * fps / spec.fps
        return mouth_track(phonemes, int(round(duration_frames)), fps, articulation=articulation), "phonemes"
    from audio import load_audio

    wav = load_audio(audio)
    n = int(round(len(wav) / 16000 * fps)) if n_frames is None else n_frames
    warnings.warn(
        f"{audio}: no synthetic-clip sidecar; the demanded mouth opening is estimated from loudness",
        stacklevel=2,
    )
    track = mouth_from_audio(wav, n, fps)
    track[:, 0] *= articulation
    return np.clip(track, 0, 1), "estimate"


def speak(source: str | Path | ClipSpec, audio: str | Path) -> Rendering:
    """Render the face of ``source`` (a clip sidecar/mp4 or a spec) speaking ``audio``."""
    spec = source if isinstance(source, ClipSpec) else read_sidecar(source)[0]
    mouth, _ = mouth_for_audio(audio, spec.fps, spec.identity.articulation)
    return render_face(spec, mouth)
