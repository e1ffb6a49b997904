"""The one exception type of the ``audio`` package."""

from __future__ import annotations

__all__ = ["AudioError"]


class AudioError(ValueError):
    """Audio could not be decoded or turned into features.

    Raised for every failure of the ``audio`` package (missing or unreadable file,
    no audio stream, no samples, a waveform too short for a window, invalid
    arguments).  The message names the offending path or value and the reason, so a
    command-line layer can print it as a one-line error.  Subclasses ``ValueError``.
    """
