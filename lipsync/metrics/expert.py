"""Sync score from this project's own sync expert: needs no third-party weights.

**Not comparable with LSE-C** (nor LSE-D): it is another network, trained here, on other
inputs, with another scale. It is the mean, over the video's windows, of the expert's
in-sync probability (the cosine similarity of its L2-normalised audio and video embeddings,
in [0, 1]; higher is better), at zero audio-video offset. Use it to compare models scored by
the same expert checkpoint, not against published tables.

Inputs are built as the experts were trained: frames re-timed to 25 fps, the face tracked by
``marlin.face`` and cut with ``wav2lip_crop`` (box padded 10 px below the chin, resized to a
square of side ``face_size[1]``), the lower half of each crop; Wav2Lip mel windows starting at
column ``floor(80 k / 25)`` for frame ``k`` (the project's "inference" convention), 16 columns
for the 5-frame expert, 64 for the 16-frame MARLIN expert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

FPS = 25
EXPERT_KINDS = ("syncnet_color", "marlin_sync")


def load_expert(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained sync expert (``SyncNetColor`` or ``MarlinSyncNet``) from a checkpoint file."""
    from lipsync.checkpoints import load

    return load(path, map_location=device, kind=EXPERT_KINDS).model


def _geometry(model: torch.nn.Module) -> tuple[int, int, int, int]:
    """(frames per window, mel columns per window, crop side, lower-half rows)."""
    h, w = getattr(model, "face_size", None) or model.config.face_size
    cols = getattr(model, "mel_columns", 16)
    return int(model.n_frames), int(cols), int(w), int(h)


@torch.no_grad()
def expert_similarities(
    model: torch.nn.Module,
    items: Iterable[tuple[int, np.ndarray | None]],
    mel: np.ndarray,
    batch_size: int = 16,
    stride: int = 1,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """In-sync probability of every window whose frames all have a face.

    Parameters
    ----------
    model : sync expert with ``n_frames``, ``similarity(mels (B, 1, 80, C), lower_faces (B, 3, T, h, w))``
    items : ``(frame index at 25 fps, lower-half face (h, w, 3) uint8 RGB or None)``, in order
    mel : (80, M) Wav2Lip mel spectrogram of the clip's audio
    stride : frames between window starts

    Returns
    -------
    (n,) float64 similarities in [0, 1] (empty when no window fits).
    """
    n_frames, cols, _, _ = _geometry(model)
    device = device if device is not None else next(model.parameters()).device
    model.eval()
    buf: list[np.ndarray] = []
    first = 0  # frame index of buf[0]
    batch_faces: list[np.ndarray] = []
    batch_mels: list[np.ndarray] = []
    out: list[np.ndarray] = []

    def run() -> None:
        if batch_faces:
            faces = torch.from_numpy(np.stack(batch_faces)).to(device).permute(0, 4, 1, 2, 3).float() / 255.0
            mels = torch.from_numpy(np.stack(batch_mels)).to(device).float().unsqueeze(1)
            out.append(model.similarity(mels, faces).double().cpu().numpy())
            batch_faces.clear()
            batch_mels.clear()

    for index, face in items:
        if face is None:
            buf = []
            continue
        if not buf:
            first = index
        buf.append(face)
        if len(buf) == n_frames:
            start = (first * 80) // FPS
            if start + cols <= mel.shape[1]:
                batch_faces.append(np.stack(buf))  # (T, h, w, 3)
                batch_mels.append(mel[:, start : start + cols])
                if len(batch_faces) == batch_size:
                    run()
            buf = buf[stride:]
            first += stride
    run()
    return np.concatenate(out) if out else np.zeros(0)


def expert_score_video(
    model: torch.nn.Module,
    path: str | Path,
    detector=None,
    batch_size: int = 16,
    stride: int = 1,
    device: str | torch.device | None = None,
    cache: dict | None = None,
) -> tuple[float, int]:
    """Mean in-sync probability of a video and the number of windows scored (NaN, 0 if none).

    ``cache``: face boxes shared with other passes (see :func:`lipsync.metrics.clips.tracked`).
    """
    from audio import load_audio, melspectrogram
    from marlin.face import wav2lip_crop

    from .clips import tracked

    _, _, side, rows = _geometry(model)

    def items():
        for frame, box in tracked(path, FPS, detector, cache):
            if box is None:
                yield frame.index, None
            else:
                crop = wav2lip_crop(frame.image, box, size=side)[0]
                yield frame.index, np.ascontiguousarray(crop[side - rows :])

    mel = melspectrogram(load_audio(path))
    sims = expert_similarities(model, items(), mel, batch_size, stride, device)
    return (float(sims.mean()) if sims.size else math.nan), int(sims.size)
