"""The MARLIN ViT encoder: tube patch embedding, fixed positions, blocks, final LayerNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import MarlinConfig
from .blocks import Block
from .embedding import PatchEmbedding3d, SinCosPositionalEmbedding

__all__ = ["MarlinEncoder", "init_weights"]


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform Linear weights with zero bias, unit LayerNorm (the release's init)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MarlinEncoder(nn.Module):
    """Encoder mapping ``(B, 3, T, H, W)`` clips in [0, 1] to ``(B, N, E)`` tokens."""

    def __init__(self, config: MarlinConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.encoder_dim
        self.patch_embedding = PatchEmbedding3d(
            config.in_channels, dim, config.tubelet_size, config.patch_size)
        self.pos_embedding = SinCosPositionalEmbedding(config.n_tokens, dim)
        self.blocks = nn.ModuleList(
            [Block(dim, config.encoder_heads, config.mlp_ratio) for _ in range(config.encoder_depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.apply(init_weights)

    def embed(self, x: Tensor) -> Tensor:
        """Patch embedding plus positions: ``(B, 3, T, H, W) -> (B, N, E)``."""
        expected = self.config.clip_shape
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"MARLIN expects clips of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        return self.pos_embedding(self.patch_embedding(x))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encode a clip, optionally keeping only visible tokens.

        Parameters
        ----------
        x:
            ``(B, 3, T, H, W)`` float clips in [0, 1].
        mask:
            Optional ``(B, N)`` bool, True = visible, the same count per sample.

        Returns
        -------
        Tensor
            ``(B, N_visible, E)`` normed tokens (``N_visible = N`` without a mask), visible
            tokens kept in increasing token order.
        """
        tokens = self.embed(x)
        if mask is not None:
            b, _, c = tokens.shape
            tokens = tokens[mask].view(b, -1, c)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def extract_features(self, x: Tensor, keep_seq: bool = True) -> Tensor:
        """Features of whole clips (no masking).

        Returns
        -------
        Tensor
            ``keep_seq=True``: ``(B, N, E)`` tokens, LayerNorm applied per token.
            ``keep_seq=False``: ``(B, E)``, the mean over tokens taken BEFORE the LayerNorm
            (as the release does).
        """
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        if not keep_seq:
            tokens = tokens.mean(dim=1)
        return self.norm(tokens)

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device
