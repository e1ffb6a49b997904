"""Pieces shared by the MARLIN-based lip-sync models: building, feeding and loading the encoder.

The encoder itself is :class:`marlin.model.MarlinEncoder` (state-dict keys as the MARLIN
release without the ``encoder.`` prefix), so MARLIN weights copy straight in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from marlin.config import MarlinConfig, get_config
from marlin.model import MarlinEncoder

__all__ = ["build_encoder", "resize_clip", "load_marlin_weights", "tokens_to_frame_maps",
           "MarlinWeightsError"]


class MarlinWeightsError(ValueError):
    """MARLIN weights that do not fit the model's encoder (names the missing/unexpected keys)."""


def build_encoder(name: str) -> MarlinEncoder:
    """Randomly initialised encoder of a MARLIN registry size (``marlin.available_models()``)."""
    return MarlinEncoder(get_config(name))


def resize_clip(clip: Tensor, size: int) -> Tensor:
    """Resize every frame of ``(B, C, T, h, w)`` to ``(B, C, T, size, size)`` (bilinear,
    antialiased when shrinking); a clip already at that size is returned as is."""
    b, c, t, h, w = clip.shape
    if (h, w) == (size, size):
        return clip
    frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
    shrink = size < h or size < w
    out = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=shrink)  # fp32: antialiasing has no bf16/fp16 CPU kernel
    return out.to(clip.dtype).view(b, t, c, size, size).transpose(1, 2)


def tokens_to_frame_maps(tokens: Tensor, config: MarlinConfig) -> Tensor:
    """Reshape encoder tokens into per-frame feature maps.

    Parameters
    ----------
    tokens:
        ``(B, N, E)`` with ``N = T' * h * w`` over ``config.grid`` (time outermost).
    config:
        The encoder's config; each token covers ``tubelet_size`` frames.

    Returns
    -------
    Tensor
        ``(B * T, E / tubelet, h, w)`` with ``T = n_frames``, clip index outermost: the E
        channels of a tube token are split into ``tubelet`` consecutive groups, group ``k`` being
        frame ``tubelet * t' + k``.  For ViT-B: ``(B, 1568, 768) -> (B*16, 384, 14, 14)``.
    """
    t, h, w = config.grid
    k = config.tubelet_size
    if tokens.ndim != 3 or tokens.shape[1] != t * h * w or tokens.shape[2] != config.encoder_dim:
        raise ValueError(f"tokens must be (B, {t * h * w}, {config.encoder_dim}) for MARLIN {config.name!r}, "
                         f"got {tuple(tokens.shape)}")
    return rearrange(tokens, "b (t h w) (k c) -> (b t k) c h w", t=t, h=h, w=w, k=k)


def _encoder_state(source: object) -> Mapping[str, Tensor]:
    if isinstance(source, str | os.PathLike):
        from marlin import Marlin  # the MARLIN package's loader knows every release format

        source = Marlin.from_file(source, with_decoder=False)
    if isinstance(source, torch.nn.Module):
        module = getattr(source, "encoder", source)
        return module.state_dict()
    if isinstance(source, Mapping):
        keys = list(source)
        for prefix in ("marlin.encoder.", "encoder."):
            if any(key.startswith(prefix) for key in keys):
                return {key[len(prefix):]: value for key, value in source.items() if key.startswith(prefix)}
        return source
    raise TypeError(f"cannot read MARLIN weights from {type(source).__name__}; pass a Marlin, a "
                    "MarlinEncoder, a state dict or a checkpoint path")


def load_marlin_weights(encoder: MarlinEncoder, source: object) -> None:
    """Copy MARLIN encoder weights into ``encoder``.

    Parameters
    ----------
    encoder:
        The model's encoder.
    source:
        A ``marlin.Marlin`` (or its encoder), a state dict with or without the ``encoder.`` /
        ``marlin.encoder.`` prefix (decoder keys are ignored), or a checkpoint path read with
        ``marlin.Marlin.from_file``.

    Raises
    ------
    MarlinWeightsError
        Missing or unexpected keys, or shapes that differ (e.g. a ViT-S checkpoint for a ViT-B
        model); the message names them.
    """
    state = dict(_encoder_state(source))
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]))
        raise MarlinWeightsError(f"MARLIN weights do not fit encoder {encoder.config.name!r}: "
                                 + "; ".join(parts))
    encoder.load_state_dict(state)
