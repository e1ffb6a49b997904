"""LSE-D / LSE-C: lip-sync error measured with SyncNet v2, as the published scripts do.

The protocol (REFERENCE.md section 3; syncnet_python's ``SyncNetInstance.evaluate`` and
Wav2Lip's ``calculate_scores_*`` scripts):

* video at 25 fps, 224x224 colour crops, fed to the network as **BGR, raw 0-255** (no
  normalisation; ``SyncNetV2.forward_lip`` takes RGB in [0, 1] and does this conversion);
* audio 16 kHz mono as **int16 sample values**, MFCC with the python_speech_features
  defaults (13 coefficients, 25 ms window, 10 ms step) -> 100 MFCC columns per second, so video
  frame ``v`` pairs with MFCC columns ``[4v, 4v + 20)``;
* ``n = min(n_frames, n_samples // 640) - 5`` windows of 5 frames, starting at frames
  ``0 .. n-1`` (the reference loop stops one window before the last complete one; kept so
  that numbers match);
* the audio embeddings are zero-padded by ``vshift = 15`` on both sides; for window ``i`` the
  Euclidean distance to padded audio embedding ``i + k`` is taken for the 31 offsets
  ``k = 0 .. 30`` (``torch.pairwise_distance``, which adds ``eps = 1e-6`` to the difference);
* ``mdist[k]`` = mean over windows; **LSE-D** = ``min(mdist)``, **LSE-C** =
  ``median(mdist) - min(mdist)``, **AV offset** = ``vshift - argmin(mdist)`` in frames
  (positive: the video best matches audio from ``offset`` frames earlier, i.e. the audio leads).

This module holds the pure scoring on embeddings plus the arrays -> embeddings step. Reading
videos and cropping faces lives in :mod:`lipsync.metrics.clips`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

VSHIFT = 15  # offsets scanned on each side, in video frames
WINDOW = 5  # video frames per SyncNet window
FPS = 25  # video frame rate the protocol assumes
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 100 MFCC columns per second / 25 fps
MFCC_WINDOW = 20  # MFCC columns per window (0.2 s)
CROP_SIZE = 224
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default eps


@dataclass(frozen=True)
class LSEScore:
    """Scores of one clip.

    Attributes
    ----------
    lse_d : minimum over offsets of the mean distance (lower is better)
    lse_c : median minus minimum of the mean distances (higher is better)
    offset : AV offset in frames, ``vshift - argmin``
    mdist : (2 * vshift + 1,) float64 mean distance per offset
    n_windows : number of 5-frame windows scored
    """

    lse_d: float
    lse_c: float
    offset: int
    mdist: np.ndarray = field(repr=False)
    n_windows: int


class LSEError(ValueError):
    """A clip that cannot be scored (too short, inconsistent shapes)."""


def n_windows(n_frames: int, n_samples: int) -> int:
    """Number of windows scored: ``min(n_frames, n_samples // 640) - 5`` (never negative)."""
    return max(0, min(int(n_frames), int(n_samples) // SAMPLES_PER_FRAME) - WINDOW)


def offset_distances(video_emb: np.ndarray | torch.Tensor, audio_emb: np.ndarray | torch.Tensor,
                     vshift: int = VSHIFT, eps: float = PAIRWISE_EPS) -> np.ndarray:
    """Distance of every video window to the audio windows at ``2 * vshift + 1`` offsets.

    Parameters
    ----------
    video_emb, audio_emb : (N, D) float, one embedding per window (same N)
    vshift : audio embeddings are zero-padded by this many rows on both sides
    eps : added to the difference before the norm, as ``torch.pairwise_distance`` does

    Returns
    -------
    (N, 2 * vshift + 1) float64; entry ``[i, k]`` = ``|| v_i - a_pad[i + k] + eps ||_2`` where
    ``a_pad[j] = audio_emb[j - vshift]`` (zeros outside), i.e. offset ``k - vshift``.
    """
    v = np.asarray(torch.as_tensor(video_emb).detach().cpu().double())
    a = np.asarray(torch.as_tensor(audio_emb).detach().cpu().double())
    if v.ndim != 2 or a.shape != v.shape:
        raise LSEError(f"video and audio embeddings must both be (N, D); got {v.shape} and {a.shape}")
    n, d = v.shape
    padded = np.concatenate([np.zeros((vshift, d)), a, np.zeros((vshift, d))])
    idx = np.arange(n)[:, None] + np.arange(2 * vshift + 1)[None, :]  # (N, 31)
    diff = v[:, None, :] - padded[idx] + eps
    return np.sqrt((diff * diff).sum(-1))


def lse_from_distances(dists: np.ndarray, vshift: int = VSHIFT) -> LSEScore:
    """Reduce (N, 2 * vshift + 1) per-window distances to LSE-D, LSE-C and the AV offset."""
    dists = np.asarray(dists, np.float64)
    if dists.ndim != 2 or dists.shape[1] != 2 * vshift + 1 or dists.shape[0] == 0:
        raise LSEError(f"distances must be (N >= 1, {2 * vshift + 1}); got {dists.shape}")
    mdist = dists.mean(0)
    k = int(np.argmin(mdist))  # first minimum, as torch.min returns
    lo = float(mdist[k])
    # torch.median returns the lower middle value; with an odd count it is the true median.
    med = float(np.sort(mdist)[(len(mdist) - 1) // 2])
    return LSEScore(lse_d=lo, lse_c=med - lo, offset=vshift - k, mdist=mdist, n_windows=dists.shape[0])


def score_embeddings(video_emb: np.ndarray | torch.Tensor, audio_emb: np.ndarray | torch.Tensor,
                     vshift: int = VSHIFT) -> LSEScore:
    """LSE scores from per-window SyncNet embeddings (N, D) of the two streams."""
    return lse_from_distances(offset_distances(video_emb, audio_emb, vshift), vshift)


def pcm16(wav: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] rounded to the 16-bit grid, as the reference pipeline's ffmpeg
    ``pcm_s16le`` extraction does; (S,) float64 in [-1, 1)."""
    wav = np.asarray(wav, np.float64)
    return np.clip(np.round(wav * 32768.0), -32768, 32767) / 32768.0


def syncnet_mfcc(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """MFCC as SyncNet v2 expects them: (13, T) float32, T = 100 per second.

    python_speech_features defaults on the int16 sample values (``audio.mfcc`` with its default
    ``pcm_scale`` of 32768), after rounding the audio to the 16-bit grid.
    """
    if sr != SAMPLE_RATE:
        raise LSEError(f"SyncNet audio must be {SAMPLE_RATE} Hz, got {sr}")
    from audio import mfcc

    return np.ascontiguousarray(np.asarray(mfcc(pcm16(wav), sr), np.float32).T)


def mfcc_windows(mfcc: np.ndarray, start: int, stop: int) -> torch.Tensor:
    """MFCC windows for video frames ``start .. stop-1``: (stop - start, 1, 13, 20) float32,
    window ``v`` = columns ``[4v, 4v + 20)`` of the (13, T) MFCC."""
    if stop > start and MFCC_PER_FRAME * (stop - 1) + MFCC_WINDOW > mfcc.shape[1]:
        raise LSEError(f"MFCC has {mfcc.shape[1]} columns; frame {stop - 1} needs "
                       f"{MFCC_PER_FRAME * (stop - 1) + MFCC_WINDOW}")
    cols = [mfcc[:, MFCC_PER_FRAME * v: MFCC_PER_FRAME * v + MFCC_WINDOW] for v in range(start, stop)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(cols), np.float32)).unsqueeze(1)


def lip_windows(frames: np.ndarray) -> torch.Tensor:
    """All 5-frame windows of consecutive crops: (N, 224, 224, 3) uint8 RGB ->
    (N - 4, 3, 5, 224, 224) float32 RGB in [0, 1] (``SyncNetV2.forward_lip``'s input; the model
    turns it into the BGR 0-255 values its weights expect)."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0  # (3, N, H, W)
    return clip.unfold(1, WINDOW, 1).permute(1, 0, 4, 2, 3)


@torch.no_grad()
def syncnet_embeddings(model: torch.nn.Module, frames: Iterable[np.ndarray], wav: np.ndarray,
                       batch_size: int = 20, device: str | torch.device | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window SyncNet v2 embeddings of one 25 fps clip, streaming over its frames.

    Parameters
    ----------
    model : SyncNet v2 (``forward_lip((B, 3, 5, 224, 224) RGB [0, 1])``,
        ``forward_aud((B, 1, 13, 20))``)
    frames : iterable of (224, 224, 3) uint8 RGB face crops at 25 fps (or an (N, 224, 224, 3)
        array); at most ``batch_size + 4`` are held at once
    wav : (S,) float mono 16 kHz audio in [-1, 1], starting with the first frame
    batch_size : windows per forward pass (20, the reference default)
    device : where the model runs; default: the model's device

    Returns
    -------
    video_emb, audio_emb : (n, D) float32 CPU tensors, ``n = n_windows(N, S)``
    """
    wav = np.asarray(wav)
    if device is None:
        device = next(model.parameters()).device
    limit = len(wav) // SAMPLES_PER_FRAME - WINDOW  # windows the audio allows
    model.eval()
    vids: list[torch.Tensor] = []
    done = 0  # windows embedded so far
    buf: list[np.ndarray] = []
    n_frames = 0

    def flush(final: bool) -> None:
        nonlocal buf, done
        while len(buf) >= WINDOW + (0 if final else batch_size - 1) and done < limit:
            take = min(len(buf) - WINDOW + 1, batch_size, limit - done)
            lips = lip_windows(np.stack(buf[: take + WINDOW - 1]))
            vids.append(model.forward_lip(lips.to(device)).float().cpu())
            done += take
            buf = buf[take:]

    for frame in frames:
        frame = np.asarray(frame)
        if frame.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise LSEError(f"frames must be ({CROP_SIZE}, {CROP_SIZE}, 3) uint8 RGB crops; got {frame.shape}")
        buf.append(frame)
        n_frames += 1
        flush(final=False)
    flush(final=True)
    n = n_windows(n_frames, len(wav))
    if n < 1:
        raise LSEError(f"clip too short for SyncNet: {n_frames} frames and {len(wav) / SAMPLE_RATE:.2f} s of "
                       f"audio (needs {WINDOW + 1} frames = {(WINDOW + 1) / FPS:.2f} s of both)")
    video_emb = torch.cat(vids)[:n]
    mfcc = syncnet_mfcc(wav)
    auds = [model.forward_aud(mfcc_windows(mfcc, a, b).to(device)).float().cpu()
            for a, b in _batches(n, batch_size)]
    return video_emb, torch.cat(auds)


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for i in range(0, n, batch_size):
        yield i, min(n, i + batch_size)


def score_clip(model: torch.nn.Module, frames: Iterable[np.ndarray], wav: np.ndarray, vshift: int = VSHIFT,
               batch_size: int = 20, device: str | torch.device | None = None) -> LSEScore:
    """LSE-D / LSE-C / AV offset of one clip (inputs as in :func:`syncnet_embeddings`)."""
    video_emb, audio_emb = syncnet_embeddings(model, frames, wav, batch_size, device)
    return score_embeddings(video_emb, audio_emb, vshift)


def mean_scores(scores: list[LSEScore]) -> dict[str, float]:
    """Arithmetic mean over clips, as the published scripts report (NaN for an empty list)."""
    if not scores:
        return {"lse_d": math.nan, "lse_c": math.nan}
    return {"lse_d": float(np.mean([s.lse_d for s in scores])), "lse_c": float(np.mean([s.lse_c for s in scores]))}
