"""Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

Submodule names follow the released checkpoints (``norm1``, ``attn``, ``norm2``,
``mlp.layers.{0,1}.linear``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import Attention

__all__ = ["Block", "Mlp", "add_linear"]


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    except RuntimeError:  # a device type autocast does not know (e.g. "meta"): never autocast
        return False


def add_linear(residual: Tensor, x: Tensor, linear: nn.Linear) -> Tensor:
    """``residual + linear(x)`` with the residual as the GEMM accumulator.

    Saves one full pass over the activations compared with adding afterwards (same result up
    to float rounding).  Falls back to the plain sum under autocast or mixed dtypes.
    """
    if _autocast_on(residual.device.type) or not (residual.dtype == x.dtype == linear.weight.dtype):
        return residual + linear(x)
    out = (residual + linear.bias).contiguous()
    out.view(-1, out.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), linear.weight.t())
    return out


class _Dense(nn.Module):
    """A ``Linear`` (stored as ``.linear``) optionally followed by GELU."""

    def __init__(self, d_in: int, d_out: int, activate: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.activation = nn.GELU() if activate else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.linear(x))


class Mlp(nn.Module):
    """``Linear(dim, hidden) -> GELU -> Linear(hidden, dim)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Dense(dim, hidden, True), _Dense(hidden, dim, False)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Block(nn.Module):
    """One transformer block on ``(B, N, dim)`` tokens (LayerNorm eps 1e-5, no layer scale)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = add_linear(x, self.attn.mix(self.norm1(x)), self.attn.proj)  # x + attn(norm1(x))
        if _rowwise_ok(x, self.mlp.layers[1].linear):
            return self._mlp_rowwise(x)
        hidden = self.mlp.layers[0](self.norm2(x))
        return add_linear(x, hidden, self.mlp.layers[1].linear)  # x + mlp(norm2(x))

    def _mlp_rowwise(self, x: Tensor) -> Tensor:
        """``x + mlp(norm2(x))`` in blocks of :data:`MLP_ROWS` tokens (inference on a CPU).

        Every token's MLP is independent of the others, so this is the same computation.  Done
        by hand because no library call fuses it: whole, the 4x-wide hidden activations make a
        round trip through main memory between ``fc1``, GELU and ``fc2`` (38 MB per block for
        two ViT-B clips); a block of rows stays in the cache.  4-7% faster end to end on the
        build machine's CPU (``bench/marlin.py``).
        """
        c = x.shape[-1]
        flat = x.reshape(-1, c)
        out = torch.empty_like(flat)
        fc2 = self.mlp.layers[1].linear
        for start in range(0, flat.shape[0], MLP_ROWS):
            rows = flat[start:start + MLP_ROWS]
            hidden = self.mlp.layers[0](self.norm2(rows))
            chunk = out[start:start + MLP_ROWS]
            torch.add(rows, fc2.bias, out=chunk)
            chunk.addmm_(hidden, fc2.weight.t())
        return out.view_as(x)


MLP_ROWS = 384  # tokens per MLP block in Block._mlp_rowwise


def _rowwise_ok(x: Tensor, linear: nn.Linear) -> bool:
    """Whether :meth:`Block._mlp_rowwise` applies: CPU inference (no autograd), plain dtypes."""
    grad = torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad)
    return (x.device.type == "cpu" and not grad
            and x.shape[:-1].numel() > MLP_ROWS and not _autocast_on("cpu")
            and x.dtype == linear.weight.dtype and linear.bias is not None)
