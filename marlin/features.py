"""MARLIN features of clips and of whole videos.

:func:`extract_video` fixes the release's known problems: frames are streamed from any
container through :func:`marlin.video.iter_frames` (no container metadata needed), every window
that fits is used (including the last one), short videos are padded, frames of any size are
centre-cropped to a square and resized, ``crop_face`` uses the tracked and smoothed face crops of
:mod:`marlin.face`, windows are encoded in batches, and each window's start time is returned.

Windows: frames are sampled every ``sample_rate`` frames; a window is ``n_frames`` consecutive
sampled frames; windows start every ``stride`` sampled frames (``stride * sample_rate`` video
frames).  A video with fewer sampled frames than one window falls back to the densest rate
``max(1, total // n_frames)`` and, if still short, repeats its last frame.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .model.marlin import Marlin

__all__ = ["REDUCTIONS", "VideoFeatures", "extract_features", "extract_video", "iter_windows",
           "prepare_frames", "window_starts"]

REDUCTIONS = ("none", "mean", "max")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VideoFeatures:
    """Features of the windows of one video.

    Attributes
    ----------
    features:
        ``(W, E)`` pooled or ``(W, N, E)`` per-token features (float32, CPU); with a reduction
        over windows ``(E,)`` / ``(N, E)``.
    start_times:
        ``(W,)`` float64 seconds: time of each window's first frame.
    start_frames:
        ``(W,)`` int64 index (in the decoded frame sequence) of each window's first frame.
    """

    features: Tensor
    start_times: Tensor
    start_frames: Tensor

    def __len__(self) -> int:
        return int(self.start_frames.numel())


def window_starts(n_sampled: int, n_frames: int, stride: int) -> list[int]:
    """Start indices (in sampled frames) of every window of ``n_frames`` that fits.

    ``[0]`` when the video is shorter than one window (it is padded); the last window that fits
    exactly is included.
    """
    if n_frames < 1 or stride < 1:
        raise ValueError(f"n_frames and stride must be positive, got {n_frames}, {stride}")
    if n_sampled < 1:
        return []
    if n_sampled <= n_frames:
        return [0]
    return list(range(0, n_sampled - n_frames + 1, stride))


def prepare_frames(frames: np.ndarray | Tensor, size: int) -> Tensor:
    """RGB frames -> one model-ready clip.

    Parameters
    ----------
    frames:
        ``(T, H, W, 3)`` uint8 RGB (any H, W).
    size:
        Output side (``config.img_size``).

    Returns
    -------
    Tensor
        ``(3, T, size, size)`` float32 in [0, 1]: centre square crop, antialiased bilinear resize.
    """
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, Tensor) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top: top + side, left: left + side]
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0).permute(1, 0, 2, 3).contiguous()


def iter_windows(frames: Iterable[Any], n_frames: int, sample_rate: int = 2, stride: int = 16,
                 transform: Callable[[Any], Any] | None = None) -> Iterator[tuple[int, float, list[Any]]]:
    """Group a stream of frames into windows (see the module docstring for the rule).

    Parameters
    ----------
    frames:
        Objects with ``index``, ``time`` and ``image`` (e.g. :class:`marlin.video.Frame`).
    n_frames, sample_rate, stride:
        Window length (sampled frames), frame step, and window step (sampled frames).
    transform:
        Applied once to each image that is used (e.g. shrink it); at most ``n_frames *
        sample_rate`` transformed images are held, whatever the video length.

    Yields
    ------
    (start_index, start_time, images)
        ``images`` is a list of exactly ``n_frames`` (transformed) images; the last one is
        repeated for videos shorter than a window.
    """
    if sample_rate < 1 or stride < 1 or n_frames < 1:
        raise ValueError(f"n_frames, sample_rate and stride must be positive, "
                         f"got {n_frames}, {sample_rate}, {stride}")
    prepare = transform or (lambda image: image)
    recent: deque[tuple[int, float, Any]] = deque(maxlen=n_frames)
    head: list[tuple[int, float, Any]] = []  # first frames, for the short-video fallback
    n_sampled = emitted = 0
    for raw_index, frame in enumerate(frames):
        item = None
        if not emitted and len(head) < n_frames * sample_rate:
            item = (frame.index, frame.time, prepare(frame.image))
            head.append(item)
        if raw_index % sample_rate:
            continue
        recent.append(item or (frame.index, frame.time, prepare(frame.image)))
        n_sampled += 1
        start = n_sampled - n_frames
        if start >= 0 and start % stride == 0:
            emitted += 1
            head.clear()
            yield recent[0][0], recent[0][1], [image for _, _, image in recent]
    if not emitted and head:
        rate = max(1, len(head) // n_frames)
        picked = head[::rate][:n_frames]
        images = [image for _, _, image in picked]
        images += [images[-1]] * (n_frames - len(images))
        yield picked[0][0], picked[0][1], images


def extract_features(model: Marlin, clips: Tensor, keep_seq: bool = True, batch_size: int | None = None,
                     autocast_dtype: torch.dtype | None = None) -> Tensor:
    """Encoder features of clips, in batches, without gradients.

    Parameters
    ----------
    clips:
        ``(B, 3, T, H, W)`` float in [0, 1] (``model.config.clip_shape``), any device.
    keep_seq:
        ``True``: ``(B, N, E)`` per-token LayerNormed features; ``False``: ``(B, E)`` pooled.
    batch_size:
        Clips per forward pass (default: all at once).
    autocast_dtype:
        e.g. ``torch.bfloat16`` to run under autocast (GPU); results are returned as float32.

    Returns
    -------
    Tensor
        Features on the model's device.
    """
    device = model.device
    step = batch_size or max(1, clips.shape[0])
    out = []
    with torch.no_grad():
        for i in range(0, clips.shape[0], step):
            chunk = clips[i: i + step].to(device, torch.float32, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                feats = model.encoder.extract_features(chunk, keep_seq=keep_seq)
            out.append(feats.float())
    return torch.cat(out) if out else clips.new_zeros((0,))


def extract_video(model: Marlin, path: str | os.PathLike, crop_face: bool = False, sample_rate: int = 2,
                  stride: int = 16, reduction: str = "none", keep_seq: bool = False, batch_size: int = 8,
                  fps: float | None = None, autocast_dtype: torch.dtype | None = None,
                  progress: bool = False) -> VideoFeatures:
    """MARLIN features of every window of a video.

    Parameters
    ----------
    model:
        A :class:`marlin.Marlin` (its config gives clip length and image size).
    path:
        Any video FFmpeg decodes (mp4, mkv, webm, mov, ...), or an image.
    crop_face:
        Replace frames by MARLIN crops of the tracked, smoothed face
        (:func:`marlin.face.iter_marlin_crops`; needs mediapipe): a square of side max(w, h)
        around the box, zero padded; frames without a face reuse the last box.  Otherwise
        frames are centre-cropped to a square.
    sample_rate, stride:
        Take every ``sample_rate``-th frame; a window starts every ``stride`` sampled frames.
    reduction:
        ``"none"`` (one feature per window), ``"mean"`` or ``"max"`` over windows.
    keep_seq:
        Per-token ``(N, E)`` features per window instead of pooled ``(E,)``.
    batch_size:
        Windows per forward pass.
    fps:
        Resample the video to this constant rate first (``None``: as stored).
    autocast_dtype:
        e.g. ``torch.bfloat16`` on GPU.
    progress:
        Show a tqdm bar over windows.

    Raises
    ------
    ValueError
        Bad arguments; ``marlin.video.VideoError`` (a ValueError) for unreadable media.
    """
    from .video import VideoError, iter_frames

    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose from {list(REDUCTIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    cfg = model.config
    if crop_face:
        from .face import iter_marlin_crops  # heavy (mediapipe, OpenCV): only when asked for

        frames = iter_marlin_crops(path, size=cfg.img_size, fps=fps)
    else:
        frames = iter_frames(path, fps=fps)
    was_training = model.training
    model.eval()
    feats: list[Tensor] = []
    times: list[float] = []
    starts: list[int] = []
    pending: list[Tensor] = []

    def flush() -> None:
        if pending:
            feats.append(extract_features(model, torch.stack(pending), keep_seq, None, autocast_dtype).cpu())
            pending.clear()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"MARLIN {os.path.basename(str(path))}", unit="window")
    try:
        def shrink(image: np.ndarray) -> Tensor:  # (H, W, 3) uint8 -> (3, S, S) float in [0, 1]
            return prepare_frames(image[None], cfg.img_size)[:, 0]

        for start, time, images in iter_windows(frames, cfg.n_frames, sample_rate, stride, shrink):
            pending.append(torch.stack(images, dim=1))  # (3, T, S, S)
            starts.append(start)
            times.append(time)
            if len(pending) == batch_size:
                flush()
            if bar is not None:
                bar.update(1)
        flush()
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if not feats:
        raise VideoError(path, "no frames decoded")
    log.debug("%s: %d windows", path, len(starts))
    out = torch.cat(feats)
    if reduction == "mean":
        out = out.mean(dim=0)
    elif reduction == "max":
        out = out.amax(dim=0)
    return VideoFeatures(out, torch.tensor(times, dtype=torch.float64),
                         torch.tensor(starts, dtype=torch.long))
