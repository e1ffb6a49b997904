"""Multi-head self-attention with the MARLIN/VideoMAE bias layout.

One ``qkv`` projection without bias plus learnable ``q_bias`` and ``v_bias`` (the key bias is
fixed at zero and not stored).  The attention itself runs through
:func:`torch.nn.functional.scaled_dot_product_attention`; :func:`plain_attention` is the textbook
softmax formulation kept for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "plain_attention"]


def plain_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v on ``(B, heads, N, d)`` tensors (reference formulation)."""
    scale = q.shape[-1] ** -0.5
    weights = (q * scale) @ k.transpose(-2, -1)
    return weights.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Self-attention over ``(B, N, dim)`` tokens.

    Parameters
    ----------
    dim:
        Token width; split into ``heads`` heads of ``dim // heads``.
    heads:
        Number of attention heads.
    use_sdpa:
        Use the fused ``scaled_dot_product_attention`` kernel (default).  ``False`` computes the
        plain softmax formulation; both give the same result up to float rounding.
    """

    def __init__(self, dim: int, heads: int, use_sdpa: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # rows ordered [q; k; v]
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def qkv_bias(self) -> Tensor:
        """The full ``(3 * dim,)`` bias ``[q_bias; 0; v_bias]`` used by the fused projection."""
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, dim) -> (B, N, dim)``."""
        return self.proj(self.mix(x))

    def mix(self, x: Tensor) -> Tensor:
        """Attention output before the ``proj`` layer: ``(B, N, dim) -> (B, N, dim)``."""
        b, n, c = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())  # (B, N, 3*dim)
        qkv = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = plain_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, n, c)
