"""MARLIN model sizes: one frozen config dataclass and one registry table.

The three published sizes (``vit_small``, ``vit_base``, ``vit_large``) match the released
checkpoints exactly; ``vit_tiny`` is this project's own size, small enough to pretrain on a CPU
in minutes.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["JsonConfig", "MarlinConfig", "available_models", "get_config", "MODEL_CONFIGS"]


class JsonConfig:
    """JSON (de)serialisation for frozen config dataclasses (``MarlinConfig``, the lip-sync
    model configs): checkpoints store :meth:`to_json` and rebuild with :meth:`from_json`."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` output (JSON lists become tuples where a field is a
        tuple); unknown keys raise ``ValueError``."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid: {sorted(names)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
                value = tuple(value)
            values[key] = value
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class MarlinConfig(JsonConfig):
    """Every number that defines a MARLIN encoder/decoder pair.

    Token grid: ``(n_frames // tubelet_size, img_size // patch_size, img_size // patch_size)``,
    flattened time-outermost into ``n_tokens`` tokens.
    """

    name: str = "custom"  # registry name, or "custom"
    img_size: int = 224  # square input side in pixels
    n_frames: int = 16  # frames per clip
    patch_size: int = 16  # spatial side of one tube patch
    tubelet_size: int = 2  # frames per tube patch
    encoder_dim: int = 768  # encoder token width E
    encoder_depth: int = 12  # encoder transformer blocks
    encoder_heads: int = 12  # encoder attention heads
    decoder_dim: int = 384  # decoder token width D
    decoder_depth: int = 4  # decoder transformer blocks
    decoder_heads: int = 6  # decoder attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / token width
    mask_ratio: float = 0.9  # fraction of tokens hidden during pretraining
    in_channels: int = 3  # RGB

    def __post_init__(self) -> None:
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.n_frames % self.tubelet_size:
            problems.append(f"n_frames {self.n_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if self.encoder_dim % self.encoder_heads:
            problems.append(f"encoder_dim {self.encoder_dim} is not divisible by {self.encoder_heads} heads")
        if self.decoder_dim % self.decoder_heads:
            problems.append(f"decoder_dim {self.decoder_dim} is not divisible by {self.decoder_heads} heads")
        if not 0.0 <= self.mask_ratio < 1.0:
            problems.append(f"mask_ratio {self.mask_ratio} is not in [0, 1)")
        if min(self.img_size, self.n_frames, self.patch_size, self.tubelet_size, self.encoder_depth) < 1:
            problems.append("sizes must be positive")
        if problems:
            raise ValueError(f"invalid MarlinConfig {self.name!r}: " + "; ".join(problems))

    # ----- derived sizes -------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` = (n_frames/tubelet, img/patch, img/patch)."""
        side = self.img_size // self.patch_size
        return (self.n_frames // self.tubelet_size, side, side)

    @property
    def n_tokens(self) -> int:
        """Number of tokens N per clip (1568 for the released sizes)."""
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_dim(self) -> int:
        """Pixels per token: ``in_channels * tubelet * patch * patch`` (1536 when released)."""
        return self.in_channels * self.tubelet_size * self.patch_size**2

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """Shape of one input clip without the batch: ``(3, T, H, W)``."""
        return (self.in_channels, self.n_frames, self.img_size, self.img_size)

    def n_visible(self, mask_ratio: float | None = None) -> int:
        """Visible tokens per clip when masking: ``int(N * (1 - ratio))`` (156 when released)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio {ratio} is not in [0, 1)")
        return max(1, int(self.n_tokens * (1.0 - ratio)))

    # ----- (de)serialisation ---------------------------------------------------------------
    def replace(self, **changes: Any) -> MarlinConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _released(name: str, enc: tuple[int, int, int], dec: tuple[int, int, int]) -> MarlinConfig:
    return MarlinConfig(
        name=name,
        encoder_dim=enc[0], encoder_depth=enc[1], encoder_heads=enc[2],
        decoder_dim=dec[0], decoder_depth=dec[1], decoder_heads=dec[2],
    )


#: The size registry.  The three ``vit_*`` published sizes use 224 px, 16 frames, 16x16x2 tubes.
MODEL_CONFIGS: dict[str, MarlinConfig] = {
    "vit_tiny": MarlinConfig(
        name="vit_tiny", img_size=112, n_frames=16, patch_size=16, tubelet_size=2,
        encoder_dim=192, encoder_depth=4, encoder_heads=3,
        decoder_dim=96, decoder_depth=2, decoder_heads=3,
    ),
    "vit_small": _released("vit_small", (384, 12, 6), (192, 4, 3)),
    "vit_base": _released("vit_base", (768, 12, 12), (384, 4, 6)),
    "vit_large": _released("vit_large", (1024, 24, 16), (512, 12, 8)),
}


def available_models() -> list[str]:
    """Registry names, smallest first: ``["vit_tiny", "vit_small", "vit_base", "vit_large"]``."""
    return list(MODEL_CONFIGS)


def get_config(name_or_config: str | MarlinConfig, **overrides: Any) -> MarlinConfig:
    """Look up a registry entry (optionally with fields replaced) or pass a config through.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    """
    if isinstance(name_or_config, MarlinConfig):
        config = name_or_config
    else:
        key = str(name_or_config)
        if key.startswith("marlin_"):  # accept the release's names, e.g. marlin_vit_base_ytf
            key = key[len("marlin_"):].removesuffix("_ytf")
        if key not in MODEL_CONFIGS:
            raise ValueError(f"unknown MARLIN model {name_or_config!r}; choose from {available_models()}")
        config = MODEL_CONFIGS[key]
    return config.replace(**overrides) if overrides else config
