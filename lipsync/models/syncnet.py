"""Wav2Lip's expert lip-sync discriminator (``SyncNet_color``) with the release's key names.

A released ``lipsync_expert.pth`` loads into :class:`SyncNetColor` unchanged (through
:func:`lipsync.checkpoints.load`, which records that its weights expect BGR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvUnit, audio_encoder, to_weights_colour
from .config import ModelConfig

__all__ = ["SyncNetColor", "SyncNetColorConfig", "sync_loss"]


@dataclass(frozen=True)
class SyncNetColorConfig(ModelConfig):
    """Sizes of the expert: the release is ``width=1``; only the weights' colour order varies there."""

    width: float = 1.0  # channel multiplier of both branches (0.25: an expert that trains on a CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")


def _res(c: int, n: int) -> list[nn.Module]:
    return [ConvUnit(c, c, 3, 1, 1, residual=True) for _ in range(n)]


class SyncNetColor(nn.Module):
    """Expert sync discriminator on 5 lower-half frames and one 16-column mel window.

    Face branch on ``(B, 15, 48, 96)`` (5 frames concatenated frame-major), audio branch on
    ``(B, 1, 80, 16)``; both end in a ReLU and are flattened to 512 and L2-normalised, so the
    cosine similarity lies in [0, 1].  About 16.4 M parameters (``width=1``; embeddings of
    ``512 * width``).
    """

    n_frames = 5
    face_size = (48, 96)

    def __init__(self, config: SyncNetColorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SyncNetColorConfig()
        c32, c64, c128, c256, c512 = (max(1, round(c * cfg.width)) for c in (32, 64, 128, 256, 512))
        self.face_encoder = nn.Sequential(
            ConvUnit(15, c32, 7, 1, 3),  # 48x96
            ConvUnit(c32, c64, 5, (1, 2), 1), *_res(c64, 2),  # 46x47
            ConvUnit(c64, c128, 3, 2, 1), *_res(c128, 3),  # 23x24
            ConvUnit(c128, c256, 3, 2, 1), *_res(c256, 2),  # 12x12
            ConvUnit(c256, c512, 3, 2, 1), *_res(c512, 2),  # 6x6
            ConvUnit(c512, c512, 3, 2, 1),  # 3x3
            ConvUnit(c512, c512, 3, 1, 0),  # 1x1
            ConvUnit(c512, c512, 1, 1, 0),
        )
        self.audio_encoder = audio_encoder((2, 2, 2, 2), cfg.width)

    @property
    def weights_colour(self) -> str:
        """Channel order the weights expect; inputs are always RGB."""
        return self.config.colour

    def _faces(self, lower_faces: Tensor) -> Tensor:
        if lower_faces.ndim == 5:  # (B, 3, 5, 48, 96) -> (B, 15, 48, 96), frame-major
            if lower_faces.shape[1] != 3:
                raise ValueError(f"lower_faces must be (B, 3, 5, 48, 96), got {tuple(lower_faces.shape)}")
            lower_faces = lower_faces.transpose(1, 2).flatten(1, 2)
        if lower_faces.ndim != 4 or tuple(lower_faces.shape[1:]) != (15, *self.face_size):
            raise ValueError("lower_faces must be (B, 3, 5, 48, 96) or (B, 15, 48, 96) RGB, "
                             f"got {tuple(lower_faces.shape)}")
        return to_weights_colour(lower_faces, self.weights_colour)

    def forward(self, mels: Tensor, lower_faces: Tensor) -> tuple[Tensor, Tensor]:
        """Embed a mel window and 5 lower-half frames.

        Parameters
        ----------
        mels:
            ``(B, 1, 80, 16)`` float in [-4, 4].
        lower_faces:
            ``(B, 3, 5, 48, 96)`` or ``(B, 15, 48, 96)`` (frame-major) float RGB in [0, 1]: rows
            ``H//2:`` of 5 consecutive 96x96 faces.

        Returns
        -------
        (audio_embedding, face_embedding), each ``(B, 512 * width)``, L2-normalised, non-negative.
        """
        if mels.ndim != 4 or tuple(mels.shape[1:]) != (1, 80, 16):
            raise ValueError(f"mels must be (B, 1, 80, 16), got {tuple(mels.shape)}")
        face = self.face_encoder(self._faces(lower_faces)).flatten(1)
        audio = self.audio_encoder(mels).flatten(1)
        return F.normalize(audio, p=2, dim=1), F.normalize(face, p=2, dim=1)

    def similarity(self, mels: Tensor, lower_faces: Tensor) -> Tensor:
        """``(B,)`` cosine similarity in [0, 1], read as the probability of being in sync."""
        audio, face = self(mels, lower_faces)
        return (audio * face).sum(dim=1)


def sync_loss(similarity: Tensor, in_sync: Tensor | float) -> Tensor:
    """Binary cross-entropy of a ``(B,)`` similarity in [0, 1] against labels (1 = in sync)."""
    target = torch.as_tensor(in_sync, dtype=similarity.dtype, device=similarity.device).expand_as(similarity)
    return F.binary_cross_entropy(similarity.clamp(1e-7, 1 - 1e-7), target)
