"""Generator losses and evaluation: the frozen expert's sync term, discriminator input, val metrics,
sample pictures and sample videos."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipsync.data.datasets import LipSyncDataset, collate_keys
from lipsync.metrics.perceptual import psnr, ssim
from lipsync.models import SyncNetColor
from lipsync.models.marlin_generator import inference_reference, needs_geometry, needs_rest

from .common import bce, image_rows, lower_half

__all__ = ["expert_similarity", "extra_inputs", "disc_input", "evaluate_generator", "reference_openings",
           "sample_grid", "render_clip"]


def expert_similarity(expert: nn.Module, faces: Tensor, mels: Tensor, window_mel: Tensor) -> Tensor:
    """In-sync probability the expert gives generated ``faces``.

    Parameters
    ----------
    expert : ``SyncNetColor`` (5-frame windows at k = 0, 5, 10, ... of the T frames, each with frame
        k's 16-column mel) or ``MarlinSyncNet`` (T must be 16; the 64-column ``window_mel``).
    faces : (B, 3, T, S, S) RGB in [0, 1].
    mels : (B, T, 1, 80, 16) per-frame mel windows.
    window_mel : (B, 1, 80, C) the audio of the whole run.

    Returns
    -------
    (B * n_windows,) similarities in [0, 1].
    """
    if isinstance(expert, SyncNetColor):
        lower = lower_half(faces, expert.face_size)
        starts = range(0, faces.shape[2] - expert.n_frames + 1, expert.n_frames)
        clips = torch.cat([lower[:, :, k:k + expert.n_frames] for k in starts])
        audio = torch.cat([mels[:, k] for k in starts])
        return expert.similarity(audio, clips)
    return expert.similarity(window_mel, lower_half(faces, expert.config.face_size))


def reference_openings(reader: nn.Module, faces: Tensor) -> Tensor:
    """``(B, 6, T, S, S)`` generator input -> ``(B, T)`` the mouth opening ``reader`` (a frozen
    :class:`lipsync.models.OpeningReader`) reads in each reference frame."""
    reference = faces[:, 3:6].float()
    b, _, t = reference.shape[:3]
    with torch.no_grad():
        lower = lower_half(reference, reader.face_size).transpose(1, 2).flatten(0, 1)
        return reader(lower).float().reshape(b, t)


def extra_inputs(generator: nn.Module, batch: dict, device: torch.device,
                 reader: nn.Module | None = None) -> dict[str, Tensor]:
    """The keyword inputs ``generator`` needs from a ``LipSyncDataset`` batch besides faces and mels;
    with ``reader``, a ``mouth_reference`` generator's ``reference_opening`` as well (what
    inference measures from the landmarks, read from the reference frames here)."""
    extra = {"rest": batch["rest"].to(device)} if needs_rest(generator) else {}
    if needs_geometry(generator) and "geometry" in batch:
        extra["mouth_geometry"] = batch["geometry"].to(device)
    if reader is not None and getattr(getattr(generator, "config", None), "mouth_reference", False):
        extra["reference_opening"] = reference_openings(reader, batch["faces"].to(device))
    return extra


def disc_input(faces: Tensor, size: int = 96) -> Tensor:
    """(B, 3, T, S, S) -> (B*T, 3, size, size) frames for the quality discriminator."""
    b, c, t, s, _ = faces.shape
    x = faces.transpose(1, 2).reshape(b * t, c, s, s)
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)
    return x


def _frames_hwc(x: Tensor) -> Tensor:
    """(B, 3, T, H, W) -> (B*T, H, W, 3) float."""
    return x.float().permute(0, 2, 3, 4, 1).reshape(-1, x.shape[3], x.shape[4], 3)


@torch.no_grad()
def evaluate_generator(generator: nn.Module, expert: nn.Module | None, dataset: LipSyncDataset, keys: list,
                       batch_size: int, device: torch.device,
                       reader: nn.Module | None = None) -> dict[str, float]:
    """Val metrics over fixed samples: ``val/l1``, ``val/psnr`` (dB), ``val/ssim`` (whole faces, [0, 1]
    scale) and ``val/sync`` (the expert's BCE against "in sync", when an expert is given); ``reader``
    as :func:`extra_inputs` takes it."""
    was = generator.training
    generator.eval()
    sums = {"val/l1": 0.0, "val/psnr": 0.0, "val/ssim": 0.0, "val/sync": 0.0}
    frames = windows = 0
    for lo in range(0, len(keys), batch_size):
        batch = collate_keys(dataset, keys[lo:lo + batch_size])
        target = batch["target"].to(device)
        pred = generator(batch["faces"].to(device), batch["mels"].to(device),
                         **extra_inputs(generator, batch, device, reader)).float()
        n = pred.shape[0] * pred.shape[2]
        sums["val/l1"] += (pred - target).abs().mean(dim=(1, 3, 4)).sum().item()  # per-frame means
        a, b = _frames_hwc(pred), _frames_hwc(target)
        sums["val/psnr"] += float(psnr(a, b, data_range=1.0).sum())
        sums["val/ssim"] += float(ssim(a, b, data_range=1.0, dtype=torch.float32).sum())
        frames += n
        if expert is not None:
            sim = expert_similarity(expert, pred, batch["mels"].to(device), batch["window_mel"].to(device))
            sums["val/sync"] += bce(sim, 1.0).item() * len(sim)
            windows += len(sim)
    generator.train(was)
    out = {k: v / frames for k, v in sums.items() if k != "val/sync"}
    if windows:
        out["val/sync"] = sums["val/sync"] / windows
    return out


@torch.no_grad()
def sample_grid(generator: nn.Module, dataset: LipSyncDataset, key, device: torch.device,
                reader: nn.Module | None = None) -> np.ndarray:
    """One val sample as a picture: rows reference / masked input / generated / ground truth
    (``reader`` as :func:`extra_inputs` takes it)."""
    was = generator.training
    generator.eval()
    item = collate_keys(dataset, [key])
    faces = item["faces"].to(device)
    extra = extra_inputs(generator, item, device, reader)
    pred = generator(faces, item["mels"].to(device), **extra).float().cpu()
    generator.train(was)
    faces = faces.cpu()
    return image_rows([faces[0, 3:], faces[0, :3], pred[0], item["target"][0]])


@torch.no_grad()
def render_clip(generator: nn.Module, dataset: LipSyncDataset, index: int, device: torch.device,
                max_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Dub the first frames of clip ``index`` with its own audio, as inference does (the reference
    is the unmasked frames themselves, or their neighbouring windows where the generator's
    ``inference_reference`` says so).  Returns ``(T, S, 2S, 3)`` uint8 frames [generated | original]
    and the matching 16 kHz audio."""
    from audio import load_audio

    window = max(1, int(getattr(generator, "frames_per_window", 1)))
    n = min(int(dataset.lengths[index]), max_frames)
    n = max(window, n - n % window)
    size = dataset.size
    frames = dataset.frames(index, 0, n, size)  # (n, 3, S, S)
    masked = frames.clone()
    masked[:, :, size // 2:] = 0
    reference, extra = inference_reference(generator, frames, dataset.opening(index, 0, n), window,
                                           dataset.geometry(index, 0, n))
    faces = torch.cat([masked, reference], dim=1)  # (n, 6, S, S)
    mels = torch.from_numpy(dataset.frame_mels(index, 0, n))[:, None]
    was = generator.training
    generator.eval()
    step = 4 * window
    pred = []
    for i in range(0, n, step):  # per-frame inputs follow their frames, per-window ones (rest) their windows
        part = {k: (v[i:i + step] if len(v) == n else v[i // window:(i + step) // window]).to(device)
                for k, v in extra.items()}
        out = generator(faces[i:i + step].to(device), mels[i:i + step].to(device), **part)
        pred.append(out.float().cpu())
    pred = torch.cat(pred)
    generator.train(was)
    both = torch.cat([pred, frames], dim=3).permute(0, 2, 3, 1)
    video = (both.clamp(0, 1) * 255).round().byte().numpy()
    audio = load_audio(dataset.clip(index).audio_path)[: n * 640]
    return video, audio
