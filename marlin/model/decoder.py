"""The MARLIN decoder: visible tokens + mask tokens -> pixel vectors of the masked tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import MarlinConfig
from .blocks import Block
from .embedding import SinCosPositionalEmbedding
from .encoder import init_weights

__all__ = ["MarlinDecoder"]


class MarlinDecoder(nn.Module):
    """Predicts ``patch_dim`` pixel values for every masked token."""

    def __init__(self, config: MarlinConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.decoder_dim
        self.pos_embedding = SinCosPositionalEmbedding(config.n_tokens, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            [Block(dim, config.decoder_heads, config.mlp_ratio) for _ in range(config.decoder_depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, config.patch_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def forward(self, visible: Tensor, mask: Tensor) -> Tensor:
        """Decode.

        Parameters
        ----------
        visible:
            ``(B, N_visible, D)`` projected encoder tokens, in increasing token order.
        mask:
            ``(B, N)`` bool, True = visible (the mask the encoder used).

        Returns
        -------
        Tensor
            ``(B, N_masked, patch_dim)`` predicted pixels of the masked tokens in increasing
            token order, each vector ordered ``(c, t, h, w)``.
        """
        b, _, c = visible.shape
        pos = self.pos_embedding.emb.expand(b, -1, -1)
        pos_visible = pos[mask].view(b, -1, c)
        pos_masked = pos[~mask].view(b, -1, c)
        n_masked = pos_masked.shape[1]
        x = torch.cat([visible + pos_visible, self.mask_token + pos_masked], dim=1)
        for block in self.blocks:
            x = block(x)
        x = x[:, -n_masked:] if n_masked else x[:, :0]
        return self.head(self.norm(x))
