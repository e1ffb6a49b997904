"""Tube patch embedding, fixed sinusoid positions, and the patch <-> clip rearrangements.

Token order is ``(t, h, w)`` with time outermost.  One token's pixel vector (``patch_dim``
values, the decoder's output and the reconstruction target) is ordered
``(channel, t, h, w)`` with the channel outermost, as in the release.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from ..config import MarlinConfig

__all__ = ["PatchEmbedding3d", "SinCosPositionalEmbedding", "sinusoid_table", "patchify", "unpatchify"]


def sinusoid_table(n_positions: int, dim: int) -> Tensor:
    """``(n_positions, dim)`` float32 table: angle ``pos / 10000**(2*(j//2)/dim)``,
    sine on even ``j`` and cosine on odd ``j`` (interleaved)."""
    # explicit CPU: cheap even when the model is being built under ``torch.device("meta")``
    pos = torch.arange(n_positions, dtype=torch.float64, device="cpu")[:, None]
    j = torch.arange(dim, device="cpu")
    angle = pos / torch.pow(10000.0, (2 * torch.div(j, 2, rounding_mode="floor")).double() / dim)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


class SinCosPositionalEmbedding(nn.Module):
    """Adds a fixed (non-trainable) table stored as ``emb``, shape ``(1, N, dim)``.

    Checkpoints carry their own ``emb``; loading one replaces the computed table.
    """

    def __init__(self, n_positions: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Parameter(sinusoid_table(n_positions, dim)[None], requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, dim) -> (B, N, dim)``."""
        return x + self.emb


class PatchEmbedding3d(nn.Module):
    """``Conv3d`` with kernel = stride = (tubelet, patch, patch), stored as ``projection``.

    ``(B, 3, T, H, W) -> (B, N, dim)`` with tokens ordered ``(t, h, w)``.
    """

    def __init__(self, in_channels: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        size = (tubelet, patch, patch)
        self.projection = nn.Conv3d(in_channels, dim, kernel_size=size, stride=size)

    def forward(self, x: Tensor) -> Tensor:
        # contiguous (B, N, dim): otherwise every later residual sum keeps the transposed layout
        # and each LayerNorm has to copy its input
        return self.projection(x).flatten(2).transpose(1, 2).contiguous()


def patchify(x: Tensor, config: MarlinConfig) -> Tensor:
    """Cut clips into token pixel vectors.

    Parameters
    ----------
    x:
        ``(B, 3, T, H, W)`` clips matching ``config``.

    Returns
    -------
    Tensor
        ``(B, N, patch_dim)``, each vector ordered ``(c, t, h, w)`` (channel outermost).
    """
    return rearrange(
        x, "b c (t p0) (h p1) (w p2) -> b (t h w) (c p0 p1 p2)",
        p0=config.tubelet_size, p1=config.patch_size, p2=config.patch_size,
    )


def unpatchify(patches: Tensor, config: MarlinConfig) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, patch_dim) -> (B, 3, T, H, W)``."""
    t, h, w = config.grid
    return rearrange(
        patches, "b (t h w) (c p0 p1 p2) -> b c (t p0) (h p1) (w p2)",
        t=t, h=h, w=w, c=config.in_channels,
        p0=config.tubelet_size, p1=config.patch_size, p2=config.patch_size,
    )
