"""Synthetic talking faces with ground truth: speech, mouth track, face box, re-renderable identity.

Quick use::

    from lipsync.data.synthetic import make_clip, generate, read_sidecar, speak
    files = make_clip("out", seed=3, duration=2.0)        # out/clip_3.mp4 / .npz / .json
    generate("data", n_clips=100, seed=0, workers=2)      # data/clip_00000.* + manifest.json
    other = speak(files.sidecar, "data/clip_00007.mp4")   # same face speaking another clip's audio

Command line: ``python -m lipsync.data.synthetic --out DIR --clips N [--seed S]``.
Speech needs espeak-ng (``libespeak-ng``); ``EspeakError`` says so when it is missing.
"""

from .clip import (
    FORMAT,
    Clip,
    ClipFiles,
    ClipSpec,
    read_sidecar,
    sample_clip_spec,
    synthesize_clip,
    write_clip,
)
from .faces import DrawnIdentity, FaceLayer, PhotoIdentity, build_face, sample_identity
from .generate import clip_seed, generate, make_clip
from .render import MotionParams, render_frames
from .rerender import Rendering, mouth_for_audio, render_face, speak
from .speech import EspeakError, Phoneme, SpeechParams, synthesize
from .visemes import PARAMS, mouth_from_audio, mouth_track, opening

__all__ = [
    "FORMAT",
    "PARAMS",
    "Clip",
    "ClipFiles",
    "ClipSpec",
    "DrawnIdentity",
    "EspeakError",
    "FaceLayer",
    "MotionParams",
    "Phoneme",
    "PhotoIdentity",
    "Rendering",
    "SpeechParams",
    "build_face",
    "clip_seed",
    "generate",
    "make_clip",
    "mouth_for_audio",
    "mouth_from_audio",
    "mouth_track",
    "opening",
    "read_sidecar",
    "render_face",
    "render_frames",
    "sample_clip_spec",
    "sample_identity",
    "speak",
    "synthesize",
    "synthesize_clip",
    "write_clip",
]
