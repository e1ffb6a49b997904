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

Known differences from the reference scripts: frames are decoded directly (the reference
round-trips them through ffmpeg JPEG files), audio is decoded by PyAV (the reference runs the
ffmpeg CLI). In-the-wild mode uses this project's face tracker instead of S3FD + scene
detection + a 13-frame median filter, so its numbers are comparable with other runs of this
tool, and only approximately with published in-the-wild numbers.

This module holds the pure scoring on embeddings plus the arrays -> embeddings step. Reading
videos and cropping faces lives in :mod:`lipsync.metrics.clips`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


def offset_distances(
    video_emb: np.ndarray | torch.Tensor,
    audio_emb: np.ndarray | torch.Tensor,
    vshift: int = VSHIFT,
    eps: float = PAIRWISE_EPS,
) -> np.ndarray:
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


def score_embeddings(
    video_emb: np.ndarray | torch.Tensor, audio_emb: np.ndarray | torch.Tensor, vshift: int = VSHIFT
) -> LSEScore:
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
        raise LSEError(
            f"MFCC has {mfcc.shape[1]} columns; frame {stop - 1} needs "
            f"{MFCC_PER_FRAME * (stop - 1) + MFCC_WINDOW}"
        )
    cols = [mfcc[:, MFCC_PER_FRAME * v : MFCC_PER_FRAME * v + MFCC_WINDOW] for v in range(start, stop)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(cols), np.float32)).unsqueeze(1)


def lip_windows(frames: np.ndarray) -> torch.Tensor:
    """All 5-frame windows of consecutive crops: (N, 224, 224, 3) uint8 RGB ->
    (N - 4, 3, 5, 224, 224) float32 RGB in [0, 1] (``SyncNetV2.forward_lip``'s input; the model
    turns it into the BGR 0-255 values its weights expect)."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0  # (3, N, H, W)
    return clip.unfold(1, WINDOW, 1).permute(1, 0, 4, 2, 3)


class LipEmbedder:
    """Streams 224x224 crops through ``forward_lip``, holding at most ``batch_size + 4`` frames.

    ``push`` frames one at a time; ``finish(limit)`` returns the (n, D) embeddings of the windows
    starting at frames ``0 .. n-1`` with ``n = min(frames - 4, limit)``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int = 20,
        device: str | torch.device | None = None,
        limit: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.device = device if device is not None else next(model.parameters()).device
        self.limit = limit  # no more windows than this are embedded (the audio's bound)
        self.n_frames = 0
        self._buf: list[np.ndarray] = []
        self._out: list[torch.Tensor] = []
        self._done = 0

    def push(self, frame: np.ndarray) -> None:
        """Add the next (224, 224, 3) uint8 RGB crop."""
        frame = np.asarray(frame)
        if frame.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise LSEError(f"frames must be ({CROP_SIZE}, {CROP_SIZE}, 3) uint8 RGB crops; got {frame.shape}")
        self._buf.append(frame)
        self.n_frames += 1
        self._flush(final=False)

    @torch.no_grad()
    def _flush(self, final: bool) -> None:
        need = WINDOW if final else WINDOW + self.batch_size - 1
        while len(self._buf) >= need and (self.limit is None or self._done < self.limit):
            take = min(len(self._buf) - WINDOW + 1, self.batch_size)
            if self.limit is not None:
                take = min(take, self.limit - self._done)
            lips = lip_windows(np.stack(self._buf[: take + WINDOW - 1]))
            self._out.append(self.model.forward_lip(lips.to(self.device)).float().cpu())
            self._done += take
            self._buf = self._buf[take:]
        if self.limit is not None and self._done >= self.limit:
            self._buf = self._buf[-(WINDOW - 1) :] if WINDOW > 1 else []

    def finish(self) -> torch.Tensor:
        """(n, D) float32 CPU embeddings of every window embedded (see the class doc)."""
        self._flush(final=True)
        self._buf = []
        return torch.cat(self._out) if self._out else torch.zeros(0, 0)


@torch.no_grad()
def audio_embeddings(
    model: torch.nn.Module,
    wav: np.ndarray,
    n: int,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``forward_aud`` of the MFCC windows of video frames ``0 .. n-1``: (n, D) float32 CPU."""
    device = device if device is not None else next(model.parameters()).device
    mfcc = syncnet_mfcc(wav)
    model.eval()
    return torch.cat(
        [
            model.forward_aud(mfcc_windows(mfcc, a, b).to(device)).float().cpu()
            for a, b in _batches(n, batch_size)
        ]
    )


def syncnet_embeddings(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    wav: np.ndarray,
    batch_size: int = 20,
    device: str | torch.device | None = None,
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

    Raises
    ------
    LSEError when ``n < 1`` (fewer than 6 frames or 0.24 s of audio).
    """
    wav = np.asarray(wav)
    lips = LipEmbedder(model, batch_size, device, limit=max(0, len(wav) // SAMPLES_PER_FRAME - WINDOW))
    for frame in frames:
        lips.push(frame)
    video_emb = lips.finish()
    n = n_windows(lips.n_frames, len(wav))
    if n < 1:
        raise LSEError(
            f"clip too short for SyncNet: {lips.n_frames} frames and {len(wav) / SAMPLE_RATE:.2f} s of "
            f"audio (needs {WINDOW + 1} frames = {(WINDOW + 1) / FPS:.2f} s of both)"
        )
    return video_emb[:n], audio_embeddings(model, wav, n, batch_size, device)


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for i in range(0, n, batch_size):
        yield i, min(n, i + batch_size)


def score_clip(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    wav: np.ndarray,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> LSEScore:
    """LSE-D / LSE-C / AV offset of one clip (inputs as in :func:`syncnet_embeddings`)."""
    video_emb, audio_emb = syncnet_embeddings(model, frames, wav, batch_size, device)
    return score_embeddings(video_emb, audio_emb, vshift)


def score_runs(
    model: torch.nn.Module,
    items: Iterable[tuple[int, np.ndarray | None]],
    wav: np.ndarray,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> tuple[LSEScore, int, int]:
    """LSE on the longest run of consecutive frames that have a face crop.

    Parameters
    ----------
    items : ``(frame index, crop or None)`` at 25 fps, in order (None: no face in that frame)
    wav : the whole clip's (S,) 16 kHz audio; a run starting at frame k uses ``wav[640 k:]``

    Returns
    -------
    (score, first frame of the run, frames in the run). Only the lip embeddings of runs are
    kept while streaming, never frames.

    Raises
    ------
    LSEError when no run is long enough to score.
    """
    wav = np.asarray(wav)
    runs: list[tuple[int, int, torch.Tensor]] = []  # (start, n_frames, lip embeddings)
    cur: LipEmbedder | None = None
    start = 0

    def close() -> None:
        nonlocal cur
        if cur is not None:
            runs.append((start, cur.n_frames, cur.finish()))
            cur = None

    for index, crop in items:
        if crop is None:
            close()
            continue
        if cur is None:
            start = index
            avail = max(0, (len(wav) - start * SAMPLES_PER_FRAME) // SAMPLES_PER_FRAME - WINDOW)
            cur = LipEmbedder(model, batch_size, device, limit=avail)
        cur.push(crop)
    close()
    best = None
    for start_, n_frames, emb in runs:
        n = n_windows(n_frames, len(wav) - start_ * SAMPLES_PER_FRAME)
        if n >= 1 and (best is None or n_frames > best[1]):
            best = (start_, n_frames, emb[:n])
    if best is None:
        longest = max((r[1] for r in runs), default=0)
        raise LSEError(
            f"no face run long enough for SyncNet (longest run {longest} frames with audio; "
            f"needs {WINDOW + 1})"
        )
    start_, n_frames, video_emb = best
    seg = wav[start_ * SAMPLES_PER_FRAME :]
    audio_emb = audio_embeddings(model, seg, len(video_emb), batch_size, device)
    return score_embeddings(video_emb, audio_emb, vshift), start_, n_frames


def score_video(
    model: torch.nn.Module,
    path: str | Path,
    mode: str = "whole",
    detector=None,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    device: str | torch.device | None = None,
    cache: dict | None = None,
) -> tuple[LSEScore, int, int]:
    """LSE of a video file with its own audio track.

    ``mode="whole"``: whole frames resized to 224 (LRS2 face-crop clips); ``"wild"``: face
    tracked (``detector``; boxes shared through ``cache``, see :func:`lipsync.metrics.clips.tracked`)
    and cropped as syncnet_python's pipeline does (see :mod:`lipsync.metrics.clips`).
    Returns ``(score, first frame scored, frames scored)``.
    """
    from audio import load_audio

    from . import clips

    if mode not in clips.LSE_MODES:
        raise ValueError(f"unknown LSE mode {mode!r}; choose one of {clips.LSE_MODES}")
    wav = load_audio(path, SAMPLE_RATE)
    if mode == "whole":
        items: Iterable[tuple[int, np.ndarray | None]] = enumerate(clips.whole_frames(path))
    else:
        items = clips.wild_crops(path, detector, cache=cache)
    return score_runs(model, items, wav, vshift, batch_size, device)
