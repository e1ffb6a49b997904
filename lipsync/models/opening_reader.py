"""A small CNN that reads the inner-lip opening from the lower half of a face.

Trained (``python -m lipsync.train_reader``) on real frames against the opening measured from
their face-mesh landmarks (``lipsync.data.sync_measure.mouth_opening``), then frozen and used
by ``python -m lipsync.train --reader`` as a loss on the generated mouth: the L1 terms let a
generator that is unsure how far the mouth opens draw the average, a blurry half-open mouth,
and the sync expert is satisfied by cues a landmark detector does not see; the reader's loss
asks for a mouth whose visible opening is the one the target frame has.

Its training blurs most frames and changes their colour and position (see the trainer), so
that it reads a blurry, differently coloured generated mouth as well as a sharp one and its
gradient points at a more open or more closed mouth.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .config import ModelConfig

__all__ = ["OpeningReader", "OpeningReaderConfig"]


@dataclass(frozen=True)
class OpeningReaderConfig(ModelConfig):
    """Sizes of the reader: input ``face_size`` (h, w) lower halves, channels ``width`` .. ``4*width``."""

    width: int = 16
    face_size: tuple[int, int] = (48, 96)  # lower half of a 96 px face
    dropout: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "face_size", tuple(int(v) for v in self.face_size))
        if self.width < 1 or len(self.face_size) != 2 or min(self.face_size) < 16:
            raise ValueError(f"need width >= 1 and face_size (h, w) >= 16, got {self.width}, "
                             f"{self.face_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class OpeningReader(nn.Module):
    """Lower halves ``(N, 3, h, w)`` RGB in [0, 1] -> ``(N,)`` inner-lip opening (the units of
    ``mouth_opening``: about 0 closed, 0.3-0.5 wide open).

    Four stride-2 stages of two 3x3 convolutions with BatchNorm and ReLU, global average
    pooling, dropout and a linear read-out (``width=16``: 0.15 M parameters).
    """

    def __init__(self, config: OpeningReaderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or OpeningReaderConfig()
        chans = [3, cfg.width, 2 * cfg.width, 4 * cfg.width, 4 * cfg.width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(chans[-1], 1))

    @property
    def face_size(self) -> tuple[int, int]:
        return self.config.face_size

    def forward(self, lower: Tensor) -> Tensor:
        if lower.ndim != 4 or lower.shape[1] != 3:
            raise ValueError(f"expected (N, 3, h, w) lower halves, got {tuple(lower.shape)}")
        # the head predicts 10x the opening (a target of order 1 trains well with MSE)
        return self.head(self.body(lower * 2.0 - 1.0).mean((2, 3))).squeeze(1) * 0.1
