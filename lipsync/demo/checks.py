"""Every request is checked before any work, and every failure becomes one line in the page.

``check_*`` refuse uploads that are missing, empty, too large, too long, too big per frame or
unreadable (:class:`DemoError` naming the file and the reason); :func:`guarded` wraps a Gradio
handler so that bad input and unexpected failures alike reach the page as one message, with
upload folders cut from paths, while the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import DemoError

log = logging.getLogger(__name__)

_CLI_HINTS = {"--face-backend haar": "the Haar face detector (advanced options)",
              "--box x1,y1,x2,y2": "a fixed face box (advanced options)",
              "--checkpoint PATH": "another checkpoint"}


def tidy_message(text: str, paths: Iterable[str] = ()) -> str:
    """An error for the page: upload folders cut from file paths, CLI flags named as UI options."""
    for p in paths:
        folder = os.path.dirname(str(p))
        if folder:
            text = text.replace(folder + os.sep, "")
    for flag, hint in _CLI_HINTS.items():
        text = text.replace(flag, hint)
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def check_upload(path: str | os.PathLike, what: str, max_bytes: int) -> Path:
    """The file exists and is at most ``max_bytes`` large."""
    p = Path(path)
    if not p.is_file():
        raise DemoError(f"{what} {p.name}: no such file")
    size = p.stat().st_size
    if size == 0:
        raise DemoError(f"{what} {p.name}: the file is empty")
    if size > max_bytes:
        raise DemoError(f"{what} {p.name}: {size / 2**20:.1f} MiB is over this demo's upload limit of "
                        f"{max_bytes / 2**20:g} MiB")
    return p


def check_visual(path: Path, max_seconds: float, max_pixels: int, what: str = "video"):
    """A readable video (at most ``max_seconds``) or photo of at most ``max_pixels``; its
    :class:`marlin.video.VideoInfo`."""
    from marlin.video import VideoError, probe

    try:
        info = probe(path)
    except VideoError as e:  # names the file and why it cannot be read
        raise DemoError(f"{what} {e}") from e
    if info.width * info.height > max_pixels:
        raise DemoError(f"{path.name}: {info.width}x{info.height} frames are larger than this demo's limit "
                        f"of {max_pixels} pixels; choose a smaller output size or scale the video down")
    if not info.is_image and info.duration > max_seconds:
        raise DemoError(f"video {path.name}: {info.duration:.1f} s is longer than this demo's limit of "
                        f"{max_seconds:g} s (python -m lipsync.infer has no limit)")
    return info


def check_audio(path: Path, max_seconds: float) -> float:
    """A file with a readable audio track of at most ``max_seconds``; its duration in seconds."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DemoError(f"audio {path.name}: the file has no audio track")
            stream = container.streams.audio[0]
            seconds = container.duration / av.time_base if container.duration else None
            if seconds is None and stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise DemoError(f"audio {path.name}: cannot be read as audio ({e})") from e
    if seconds is None:  # no duration stored (some webm/ogg recordings): decode and count
        from audio import SAMPLE_RATE, load_audio

        seconds = len(load_audio(path, SAMPLE_RATE)) / SAMPLE_RATE
    if seconds > max_seconds:
        raise DemoError(f"audio {path.name}: {seconds:.1f} s is longer than this demo's limit of "
                        f"{max_seconds:g} s (python -m lipsync.infer has no limit)")
    return seconds


def _release_gpu_memory() -> None:
    """Give cached CUDA blocks back after a failed request (an out-of-memory error above all)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def guarded(fn: Callable) -> Callable:
    """A handler whose bad input becomes one clear message in the page (``gr.Error``); any other
    failure is logged and reported too, and the server keeps serving."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        files = [a for a in (*args, *kwargs.values()) if isinstance(a, str) and os.path.isfile(a)]
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:  # DemoError, DubError, AudioError, VideoError, CheckpointError
            message = tidy_message(str(e), files)
            log.warning("request refused: %s", message)
            raise gr.Error(message, duration=None, title="Cannot do this", print_exception=False) from e
        except MemoryError as e:
            _release_gpu_memory()
            raise gr.Error("out of memory: try a shorter clip or a smaller output size", duration=None) from e
        except Exception as e:  # noqa: BLE001 - one request's failure must not stop the server
            log.exception("request failed")
            _release_gpu_memory()
            text = tidy_message(f"{type(e).__name__}: {e}", files)
            if "out of memory" in text.lower():
                text = "out of GPU memory: try a shorter clip or a smaller output size"
            raise gr.Error(f"the request failed ({text}); the server is still running", duration=None) from e

    return wrapper
