"""Build the reference implementation (marlin-pytorch 0.3.4) for comparisons in tests and benches.

marlin-pytorch's package ``__init__`` imports OpenCV and ffmpeg-python for its video helpers;
its model modules need only torch and einops.  :func:`release_modules` imports just those
modules, so the comparison works wherever ``pip install --no-deps marlin-pytorch==0.3.4`` ran.
Nothing here is used by the library itself.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

from torch import Tensor, nn

from ..config import MarlinConfig

__all__ = ["release_available", "release_modules", "build_release"]


def release_available() -> bool:
    """True when marlin-pytorch is installed."""
    return "marlin_pytorch" in sys.modules or importlib.util.find_spec("marlin_pytorch") is not None


def release_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """``(encoder_module, decoder_module)`` of marlin-pytorch without its video dependencies.

    Raises
    ------
    ImportError
        When marlin-pytorch is not installed.
    """
    if "marlin_pytorch.model.decoder" in sys.modules:
        return sys.modules["marlin_pytorch.model.encoder"], sys.modules["marlin_pytorch.model.decoder"]
    spec = importlib.util.find_spec("marlin_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("marlin-pytorch is not installed (pip install --no-deps marlin-pytorch==0.3.4)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, folder in (("marlin_pytorch", root), ("marlin_pytorch.model", root / "model")):
        if name not in sys.modules:  # a bare package object: its __init__ is not executed
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(folder)]
            pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            pkg.__spec__.submodule_search_locations = [str(folder)]
            sys.modules[name] = pkg
    encoder = importlib.import_module("marlin_pytorch.model.encoder")
    decoder = importlib.import_module("marlin_pytorch.model.decoder")
    return encoder, decoder


class ReleaseMarlin(nn.Module):
    """The release's full model (its ``Marlin`` class minus the file and video code)."""

    def __init__(self, config: MarlinConfig, with_decoder: bool = True) -> None:
        super().__init__()
        enc_mod, dec_mod = release_modules()
        common = dict(img_size=config.img_size, patch_size=config.patch_size, n_frames=config.n_frames,
                      mlp_ratio=config.mlp_ratio, qkv_bias=True, qk_scale=None, drop_rate=0.0,
                      attn_drop_rate=0.0, norm_layer="LayerNorm", init_values=0.0,
                      tubelet_size=config.tubelet_size)
        self.encoder = enc_mod.MarlinEncoder(embed_dim=config.encoder_dim, depth=config.encoder_depth,
                                             num_heads=config.encoder_heads, **common)
        self.enc_dec_proj = self.decoder = None
        if with_decoder:
            self.decoder = dec_mod.MarlinDecoder(embed_dim=config.decoder_dim, depth=config.decoder_depth,
                                                 num_heads=config.decoder_heads, **common)
            self.enc_dec_proj = nn.Linear(config.encoder_dim, config.decoder_dim, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.decoder(self.enc_dec_proj(self.encoder(x, mask)), mask)

    def extract_features(self, x: Tensor, keep_seq: bool = True) -> Tensor:
        return self.encoder.extract_features(x, seq_mean_pool=not keep_seq)


def build_release(config: MarlinConfig, with_decoder: bool = True) -> ReleaseMarlin:
    """A randomly initialised reference model with ``config``'s sizes, in eval mode."""
    return ReleaseMarlin(config, with_decoder).eval()
