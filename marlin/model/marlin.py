"""The full MARLIN module: encoder, ``enc_dec_proj`` and decoder, with the release's names.

Loading and saving live in :mod:`marlin.checkpoint` and video reading in :mod:`marlin.features`;
the ``from_file`` / ``save`` / ``extract_video`` methods here only delegate to them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import MarlinConfig, get_config
from .decoder import MarlinDecoder
from .embedding import patchify, unpatchify
from .encoder import MarlinEncoder

if TYPE_CHECKING:  # pragma: no cover
    from ..features import VideoFeatures

__all__ = ["Marlin"]


class Marlin(nn.Module):
    """MARLIN masked autoencoder for facial video clips.

    Parameters
    ----------
    config:
        Sizes (see :mod:`marlin.config`).
    with_decoder:
        Build ``enc_dec_proj`` and ``decoder`` (needed for pretraining and
        :meth:`reconstruct`).  ``False`` gives a feature extractor, like the released
        ``*.encoder.pt`` files.

    Attributes
    ----------
    encoder, enc_dec_proj, decoder:
        Submodules named as in the public release, so its state dicts load unchanged.
    """

    def __init__(self, config: MarlinConfig, with_decoder: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = MarlinEncoder(config)
        self.enc_dec_proj: nn.Linear | None = None
        self.decoder: MarlinDecoder | None = None
        if with_decoder:
            self.enc_dec_proj = nn.Linear(config.encoder_dim, config.decoder_dim, bias=False)
            nn.init.xavier_uniform_(self.enc_dec_proj.weight)
            self.decoder = MarlinDecoder(config)

    # ----- construction --------------------------------------------------------------------
    @classmethod
    def from_config(cls, name_or_config: str | MarlinConfig, with_decoder: bool = True,
                    **overrides: Any) -> Marlin:
        """Random-init model from a registry name (``available_models()``) or a config;
        ``overrides`` replace config fields, e.g. ``n_frames=8``."""
        return cls(get_config(name_or_config, **overrides), with_decoder=with_decoder)

    @classmethod
    def from_file(cls, path: str | os.PathLike, config: MarlinConfig | str | None = None,
                  with_decoder: bool | None = None, map_location: str | torch.device = "cpu") -> Marlin:
        """Load any supported checkpoint; see :func:`marlin.checkpoint.load_marlin`."""
        from ..checkpoint import load_marlin

        return load_marlin(path, config=config, with_decoder=with_decoder, map_location=map_location)

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
        """Write a safetensors file with the config in its metadata (atomic)."""
        from ..checkpoint import save_marlin

        save_marlin(self, path, metadata=metadata)

    # ----- properties ----------------------------------------------------------------------
    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')``; tokens are flattened time-outermost."""
        return self.config.grid

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    # ----- pretraining / reconstruction ----------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Masked-autoencoder pass.

        Parameters
        ----------
        x:
            ``(B, 3, T, H, W)`` float clips in [0, 1].
        mask:
            ``(B, N)`` bool, True = visible, the same count per sample
            (:func:`marlin.masking.make_mask`).

        Returns
        -------
        Tensor
            ``(B, N_masked, patch_dim)`` predicted pixels of the masked tokens in increasing
            token order; compare with ``self.patchify(x)[~mask].view(B, -1, patch_dim)``.
        """
        if self.decoder is None or self.enc_dec_proj is None:
            raise RuntimeError("this Marlin has no decoder (encoder-only checkpoint); "
                               "use extract_features, or build it with with_decoder=True")
        if mask.dtype != torch.bool or mask.shape != (x.shape[0], self.config.n_tokens):
            raise ValueError(f"mask must be bool of shape ({x.shape[0]}, {self.config.n_tokens}), "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        visible = self.encoder(x, mask)
        return self.decoder(self.enc_dec_proj(visible), mask)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, N, patch_dim)`` reconstruction targets."""
        return patchify(x, self.config)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """``(B, N, patch_dim) -> (B, 3, T, H, W)``."""
        return unpatchify(patches, self.config)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, mask: Tensor, paste_visible: bool = True) -> Tensor:
        """Reconstruct a clip from its visible tokens.

        Parameters
        ----------
        x:
            ``(B, 3, T, H, W)`` float clips in [0, 1].
        mask:
            ``(B, N)`` bool, True = visible.
        paste_visible:
            Copy the visible patches from ``x`` (default); otherwise they are zero, so that only
            the model's predictions remain.

        Returns
        -------
        Tensor
            ``(B, 3, T, H, W)`` float in [0, 1]: masked patches predicted, clamped to [0, 1].
        """
        pred = self(x, mask)
        patches = self.patchify(x).clone() if paste_visible else x.new_zeros(
            x.shape[0], self.config.n_tokens, self.config.patch_dim)
        patches[~mask] = pred.reshape(-1, self.config.patch_dim).to(patches.dtype)
        return self.unpatchify(patches).clamp(0.0, 1.0)

    # ----- features ------------------------------------------------------------------------
    def extract_features(self, x: Tensor, keep_seq: bool = True) -> Tensor:
        """Encoder features of whole clips, as the release.

        Gradients flow only in training mode; in eval mode this runs under ``torch.no_grad``.

        Parameters
        ----------
        x:
            ``(B, 3, T, H, W)`` float clips in [0, 1] (``config.clip_shape``).
        keep_seq:
            ``True``: per-token features ``(B, N, E)`` (tokens ordered over ``grid``).
            ``False``: pooled ``(B, E)`` (mean over tokens, then LayerNorm).
        """
        if self.training:
            return self.encoder.extract_features(x, keep_seq=keep_seq)
        with torch.no_grad():
            return self.encoder.extract_features(x, keep_seq=keep_seq)

    def extract_video(self, path: str | os.PathLike, **kwargs: Any) -> VideoFeatures:
        """Features of every window of a video file; see :func:`marlin.features.extract_video`."""
        from ..features import extract_video

        return extract_video(self, path, **kwargs)
