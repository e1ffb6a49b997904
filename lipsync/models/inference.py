"""Faster inference copies of the lip-sync models: BatchNorm folding, channels_last, bf16.

:func:`prepare_for_inference` returns a new module (the original is untouched) with the same
call signature, attributes and RGB-in / RGB-out contract; ``bench/models.py`` measures the
speed-up and the max abs difference against the eager fp32 model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["fold_batchnorm", "prepare_for_inference", "InferenceModel"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
    shape = [1] * conv.weight.ndim
    shape[out_dim] = -1
    if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
        raise ValueError("folding BatchNorm into a grouped ConvTranspose2d is not supported")
    conv.weight.mul_(scale.view(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv -> BatchNorm`` pair that sits in one ``nn.Sequential`` (in place).

    The BatchNorm is replaced by ``nn.Identity``; only valid in eval mode (running statistics).
    Returns the number of folded pairs.
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module._modules.items())
        for (_, conv), (name, bn) in zip(children, children[1:]):
            if isinstance(conv, _CONVS) and isinstance(bn, _NORMS) and bn.track_running_stats \
                    and bn.running_var is not None and bn.affine:
                _fold(conv, bn)
                module._modules[name] = nn.Identity()
                count += 1
    return count


class InferenceModel(nn.Module):
    """Wraps a prepared model: casts floating inputs to its dtype and outputs back to float32.

    Attribute lookups the wrapper does not know (``img_size``, ``frames_per_window``,
    ``weights_colour``, ``config``, ``encode`` ...) go to the wrapped model.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def _cast(self, value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.to(self.dtype)
        return value

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            out = self.model(*map(self._cast, args), **{k: self._cast(v) for k, v in kwargs.items()})
        if isinstance(out, Tensor):
            return out.float()
        if isinstance(out, tuple):
            return tuple(o.float() if isinstance(o, Tensor) else o for o in out)
        return out


def prepare_for_inference(model: nn.Module, fold_bn: bool = True, channels_last: bool = True,
                          dtype: torch.dtype = torch.float32) -> InferenceModel:
    """An eval-mode copy of ``model`` for fast inference.

    Parameters
    ----------
    model:
        Any lip-sync model (left unchanged).
    fold_bn:
        Fold BatchNorm into the preceding convolution (exact up to float rounding).
    channels_last:
        Store 4-D convolution weights channels-last (oneDNN / cuDNN pick the NHWC kernels).
    dtype:
        ``torch.bfloat16`` (or ``float16`` on a GPU) runs the weights in that precision;
        inputs are cast on the way in and outputs returned as float32.

    Returns
    -------
    InferenceModel
        Callable like ``model`` (same arguments and shapes), running under ``inference_mode``.
    """
    prepared = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorm(prepared)
    prepared = prepared.to(dtype=dtype)
    if channels_last:
        for module in prepared.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    prepared.requires_grad_(False)
    return InferenceModel(prepared, dtype)
