"""Lip-sync generation conditioned on MARLIN facial video features.

Public API (imported lazily, so ``import lipsync`` stays light and never pulls in gradio or
lpips)::

    from lipsync import LipSync
    ls = LipSync.from_checkpoint()            # or a path; device="auto" (cuda, mps, cpu)
    summary = ls.dub("talk.mp4", "speech.wav", "dubbed.mp4")
    for frame in ls.iter_frames("talk.mp4", "speech.wav"):
        ...

Command line: ``python -m lipsync.infer --video V --audio A [--out O]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["DEFAULT_CHECKPOINT", "DubError", "DubOptions", "DubSummary", "FaceSelect", "LipSync"]

_LAZY = {
    "LipSync": "lipsync.api",
    "DEFAULT_CHECKPOINT": "lipsync.inference.job",
    "DubError": "lipsync.inference.options",
    "DubOptions": "lipsync.inference.options",
    "DubSummary": "lipsync.inference.options",
    "FaceSelect": "lipsync.inference.options",
}

if TYPE_CHECKING:  # pragma: no cover
    from lipsync.api import LipSync
    from lipsync.inference.job import DEFAULT_CHECKPOINT
    from lipsync.inference.options import DubError, DubOptions, DubSummary, FaceSelect


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lipsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
