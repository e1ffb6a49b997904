"""Config dataclass helpers shared by every lip-sync model.

Each model has a frozen config dataclass deriving from :class:`ModelConfig`; checkpoints store
``config.to_json()`` and rebuild the model with ``ConfigClass.from_dict``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, Self

from .blocks import check_colour

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` output (JSON lists become tuples where declared)."""
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
