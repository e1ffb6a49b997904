"""Wav2Lip's visual quality discriminator with the release's key names.

A released ``visual_quality_disc.pth`` loads into :class:`QualityDisc` unchanged (through
:func:`lipsync.checkpoints.load`, which records that its weights expect BGR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import LeakyConvUnit, fold_frames, to_weights_colour
from .config import ModelConfig

__all__ = ["QualityDisc", "QualityDiscConfig"]


@dataclass(frozen=True)
class QualityDiscConfig(ModelConfig):
    """Sizes of the discriminator: the release is ``width=1``; only the weights' colour order varies there."""

    width: float = 1.0  # channel multiplier (0.25: a discriminator that trains on a CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")


def _pair(cin: int, cout: int, kernel: int, stride: int | tuple[int, int]) -> nn.Sequential:
    pad = kernel // 2
    return nn.Sequential(LeakyConvUnit(cin, cout, kernel, stride, pad),
                         LeakyConvUnit(cout, cout, kernel, 1, pad))


class QualityDisc(nn.Module):
    """Per-frame real/fake classifier on the lower half of a 96x96 face (about 14.1 M parameters
    at ``width=1``).

    Convolutions without normalisation and LeakyReLU(0.01); a 1x1 convolution and a sigmoid
    give the probability that the frame is real.
    """

    img_size = 96

    def __init__(self, config: QualityDiscConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or QualityDiscConfig()
        c32, c64, c128, c256, c512 = (max(1, round(c * cfg.width)) for c in (32, 64, 128, 256, 512))
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(LeakyConvUnit(3, c32, 7, 1, 3)),  # 48x96
            _pair(c32, c64, 5, (1, 2)),  # 48x48
            _pair(c64, c128, 5, 2),  # 24
            _pair(c128, c256, 5, 2),  # 12
            _pair(c256, c512, 3, 2),  # 6
            _pair(c512, c512, 3, 2),  # 3
            nn.Sequential(LeakyConvUnit(c512, c512, 3, 1, 0), LeakyConvUnit(c512, c512, 1, 1, 0)),  # 1
        ])
        self.binary_pred = nn.Sequential(nn.Conv2d(c512, 1, 1), nn.Sigmoid())

    @property
    def weights_colour(self) -> str:
        """Channel order the weights expect; inputs are always RGB."""
        return self.config.colour

    def forward(self, faces: Tensor) -> Tensor:
        """Probability that each frame is real: ``sigmoid(self.logits(faces))``."""
        return torch.sigmoid(self.logits(faces))

    def logits(self, faces: Tensor) -> Tensor:
        """Logit of the probability that each frame is real (what the losses take: a
        cross-entropy on probabilities clamped away from 0 and 1 has no gradient once the
        discriminator saturates, and such a discriminator never recovers).

        Parameters
        ----------
        faces:
            ``(B, 3, T, 96, 96)`` or ``(B*T, 3, 96, 96)`` float RGB in [0, 1], whole faces (the
            lower half is taken here).

        Returns
        -------
        Tensor
            ``(B*T, 1)``, frames in clip-outermost order.
        """
        x, _ = fold_frames(faces)
        if x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"faces must be (B, 3, T, 96, 96) or (B*T, 3, 96, 96), got {tuple(faces.shape)}")
        x = to_weights_colour(x[:, :, x.shape[2] // 2:], self.weights_colour)
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred[0](x).view(len(x), -1)  # binary_pred[1] is the sigmoid of forward

    def generator_loss(self, fake_faces: Tensor) -> Tensor:
        """``BCE(D(G), 1)``: the adversarial term the generator minimises."""
        pred = self.logits(fake_faces)
        return F.binary_cross_entropy_with_logits(pred.float(), torch.ones_like(pred, dtype=torch.float32))

    def discriminator_loss(self, real_faces: Tensor, fake_faces: Tensor) -> Tensor:
        """``BCE(D(real), 1) + BCE(D(fake.detach()), 0)``."""
        real = self.logits(real_faces).float()
        fake = self.logits(fake_faces.detach()).float()
        return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
            F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
