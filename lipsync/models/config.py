"""Config dataclass helpers shared by every lip-sync model.

Each model has a frozen config dataclass deriving from :class:`ModelConfig`; checkpoints store
``config.to_json()`` and rebuild the model with ``ConfigClass.from_dict`` (both from
:class:`marlin.config.JsonConfig`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

from marlin.config import JsonConfig

from .blocks import check_colour

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Base of every lip-sync model config.

    ``colour`` is the channel order the WEIGHTS expect (``"rgb"`` for this project's own
    training, ``"bgr"`` for the public Wav2Lip release).  Callers always pass RGB; the model
    converts at its boundary.
    """

    colour: str = "rgb"  # channel order of the weights: "rgb" or "bgr"

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour", check_colour(self.colour))

    def replace(self, **changes: Any) -> Self:
        """A copy with fields changed (validated again); unknown names raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} fields {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)
