"""Pure planning functions: frame counts, loop order, device and precision choice."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import torch

from .options import DubError


def output_frame_count(audio_seconds: float, fps: float | Fraction) -> int:
    """Number of output frames so that the video lasts as long as the audio (within half a frame).

    >>> output_frame_count(2.0, 25)
    50
    """
    if not audio_seconds > 0:
        raise DubError(f"audio duration {audio_seconds} s must be positive")
    return max(1, round(float(audio_seconds) * float(fps)))


def source_index(i: int, n_src: int, mode: str) -> int:
    """Which source frame output frame ``i`` shows when the video has ``n_src`` frames.

    ``pingpong`` runs forward, backward, forward... without repeating the turning frames
    (0 1 2 3 2 1 0 1 ...); ``loop`` jumps back to frame 0; ``freeze`` holds the last frame.
    """
    if n_src < 1:
        raise DubError("the video has no frames")
    if i < n_src or n_src == 1:
        return min(i, n_src - 1)
    if mode == "freeze":
        return n_src - 1
    if mode == "loop":
        return i % n_src
    if mode == "pingpong":
        period = 2 * n_src - 2
        k = i % period
        return k if k < n_src else period - k
    raise DubError(f"loop mode {mode!r} is not one of pingpong, loop, freeze")


def replay_runs(n_src: int, n_out: int, mode: str) -> Iterator[tuple[int, int, int]]:
    """Runs of source frames for output frames ``n_src .. n_out - 1`` (after the first pass).

    Yields ``(first, count, step)``: ``count`` consecutive output frames show source frames
    ``first, first + step, ...`` with ``step`` in {+1, -1, 0} (0: the same frame repeated).
    Consecutive runs cover the output frames in order; their sizes sum to ``n_out - n_src``.
    """
    i = n_src
    while i < n_out:
        s = source_index(i, n_src, mode)
        if n_src == 1 or mode == "freeze":
            yield s, n_out - i, 0
            return
        nxt = source_index(i + 1, n_src, mode)
        step = nxt - s
        count = 1
        while i + count < n_out and source_index(i + count, n_src, mode) == s + count * step:
            count += 1
        yield s, count, step
        i += count


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit but unavailable device is an error."""
    name = str(name).lower()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DubError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N, mps") from e
    if (dev.type == "cuda" and not cuda) or (dev.type == "mps" and not mps):
        raise DubError(f"device {name!r} is not available here; use --device auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DubError(f"device {name!r} is not one of auto, cpu, cuda, mps")
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype for an explicit precision (``auto`` here: fp16 on cuda, fp32 elsewhere;
    :class:`~lipsync.inference.runner.GeneratorRunner` refines ``auto`` by testing the model)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in table:
        raise DubError(f"precision {precision!r} is not one of auto, fp32, fp16, bf16")
    if table[precision] is torch.float16 and device.type == "cpu":
        raise DubError("precision fp16 is not supported on cpu; use fp32 or bf16")
    return table[precision]


def seconds_to_frames(seconds: float, fps: float) -> int:
    """Whole frames in ``seconds`` at ``fps`` (rounded to the nearest frame)."""
    return int(math.floor(seconds * fps + 0.5))
