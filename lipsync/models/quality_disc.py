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
    """Sizes of the discriminator: the release is ``width=1``, ``slope=0.01``, ``region=None``;
    only the weights' colour order varies there.

    ``slope`` is the LeakyReLU's negative slope.  At the release's 0.01 a unit whose
    pre-activations have all gone negative passes a hundredth of its input and gradient, and a
    small discriminator can end up so: the first layer of ``quality_disc_tiny`` trained in this
    project's GAN stages was negative on nearly every pixel of real faces, and its loss sat at chance
    (2 ln 2) for thousands of steps.  0.2, the usual choice for GAN discriminators, keeps such a
    unit trainable.

    ``region`` (x1, y1, x2, y2 as fractions of the 96 px face) makes the discriminator judge only
    that box, resized to 96 x 96 (so with a box half the face's size, at twice the resolution):
    the mouth, where a dub differs from a real frame, instead of the lower half, where most
    pixels are the reference's own.  It then gives one logit per row of its final map (4 for a
    96 x 96 input), each judged on its own in the losses.
    """

    width: float = 1.0  # channel multiplier (0.25: a discriminator that trains on a CPU)
    slope: float = 0.01  # LeakyReLU negative slope (the release's 0.01)
    region: tuple[float, float, float, float] | None = None  # judged box; None: the lower half

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if not 0 <= self.slope < 1:
            raise ValueError(f"slope must be in [0, 1), got {self.slope}")
        if self.region is not None:
            box = tuple(float(v) for v in self.region)
            if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
                raise ValueError(f"region must be (x1, y1, x2, y2) fractions with x1 < x2, y1 < y2, "
                                 f"got {self.region}")
            object.__setattr__(self, "region", box)


def _pair(cin: int, cout: int, kernel: int, stride: int | tuple[int, int], slope: float) -> nn.Sequential:
    pad = kernel // 2
    return nn.Sequential(LeakyConvUnit(cin, cout, kernel, stride, pad, slope),
                         LeakyConvUnit(cout, cout, kernel, 1, pad, slope))


class QualityDisc(nn.Module):
    """Per-frame real/fake classifier on the lower half of a 96x96 face, or on a box of it
    (``region``) (about 14.1 M parameters at ``width=1``).

    Convolutions without normalisation and LeakyReLU (slope 0.01 in the release); a 1x1
    convolution and a sigmoid give the probability that the frame is real.
    """

    img_size = 96

    def __init__(self, config: QualityDiscConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or QualityDiscConfig()
        c32, c64, c128, c256, c512 = (max(1, round(c * cfg.width)) for c in (32, 64, 128, 256, 512))
        k = cfg.slope  # sizes below: the lower half (48 x 96); a region (96 x 96) has twice the rows
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(LeakyConvUnit(3, c32, 7, 1, 3, k)),  # 48x96
            _pair(c32, c64, 5, (1, 2), k),  # 48x48
            _pair(c64, c128, 5, 2, k),  # 24
            _pair(c128, c256, 5, 2, k),  # 12
            _pair(c256, c512, 3, 2, k),  # 6
            _pair(c512, c512, 3, 2, k),  # 3
            nn.Sequential(LeakyConvUnit(c512, c512, 3, 1, 0, k), LeakyConvUnit(c512, c512, 1, 1, 0, k)),  # 1
        ])
        self.binary_pred = nn.Sequential(nn.Conv2d(c512, 1, 1), nn.Sigmoid())
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for the LeakyReLU slope, zero biases, a near-zero output layer.

        PyTorch's default shrinks the signal at each of the 13 unnormalised layers, so a fresh
        discriminator's logits start near zero whatever the face and it learns slowly: on a plain
        task (real faces against the same faces with the mouth box blurred by a 3 x 3 mean, 60
        steps of 16 + 16) ``quality_disc_lips_tiny`` reached a loss of 1.33 from PyTorch's
        default and 0.92 from this (``quality_disc_tiny`` 0.59; chance is 1.39).  Loaded weights
        replace all of it."""
        for block in self.face_encoder_blocks:
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, a=self.config.slope, nonlinearity="leaky_relu")
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.binary_pred[0].weight, std=0.01)
        nn.init.zeros_(self.binary_pred[0].bias)

    @property
    def weights_colour(self) -> str:
        """Channel order the weights expect; inputs are always RGB."""
        return self.config.colour

    def forward(self, faces: Tensor) -> Tensor:
        """Probability that each frame is real: ``sigmoid(self.logits(faces))``."""
        return torch.sigmoid(self.logits(faces))

    def judged(self, faces: Tensor) -> Tensor:
        """What the first layer sees: the lower half (or the ``region``, resized to 96 x 96) of
        each frame, ``(B*T, 3, h, w)`` in the weights' colour order."""
        x, _ = fold_frames(faces)
        if x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"faces must be (B, 3, T, 96, 96) or (B*T, 3, 96, 96), got {tuple(faces.shape)}")
        box = self.config.region
        if box is None:
            x = x[:, :, x.shape[2] // 2:]
        else:
            s = self.img_size
            x1, y1, x2, y2 = (round(v * s) for v in box)
            x = F.interpolate(x[:, :, y1:y2, x1:x2], size=(s, s), mode="bilinear", align_corners=False)
        return to_weights_colour(x, self.weights_colour)

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
            ``(B*T, 1)`` (``(B*T, 4)`` with a ``region``), frames in clip-outermost order.
        """
        x = self.judged(faces)
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
