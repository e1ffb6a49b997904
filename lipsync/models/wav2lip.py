"""Wav2Lip generator with the public release's layer structure and state-dict key names.

A released ``wav2lip.pth`` / ``wav2lip_gan.pth`` state dict loads into :class:`Wav2Lip`
unchanged (use :func:`lipsync.checkpoints.load`, which also strips ``module.`` prefixes and
records that those weights expect BGR).  The forward pass takes RGB in [0, 1] whatever the
weights' colour order (see ``Wav2LipConfig.colour``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import (
    ConvTransposeUnit,
    ConvUnit,
    audio_encoder,
    fold_generator_inputs,
    from_weights_colour,
    to_weights_colour,
    unfold_frames,
)
from .config import ModelConfig

__all__ = ["Wav2Lip", "Wav2LipConfig"]


@dataclass(frozen=True)
class Wav2LipConfig(ModelConfig):
    """The release generator has no size options; only the weights' colour order varies."""


def _stage(cin: int, cout: int, stride: int, n_res: int, kernel: int = 3, padding: int = 1) -> nn.Sequential:
    units = [ConvUnit(cin, cout, kernel, stride, padding)]
    units += [ConvUnit(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
    return nn.Sequential(*units)


def _up(cin: int, cout: int, n_res: int, stride: int = 2) -> nn.Sequential:
    if stride == 1:
        first = ConvTransposeUnit(cin, cout, 3, 1, 0)  # 1x1 -> 3x3
    else:
        first = ConvTransposeUnit(cin, cout, 3, 2, 1, output_padding=1)
    return nn.Sequential(first, *[ConvUnit(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)])


class Wav2Lip(nn.Module):
    """U-Net generator: 96x96 masked target + reference and a mel window -> 96x96 face.

    Encoder features at 96, 48, 24, 12, 6, 3, 1 px are concatenated into the decoder
    (deepest first); the decoder starts from the 512-d audio embedding.  About 36.3 M
    parameters.

    Attributes
    ----------
    img_size : int
        96, the face side this generator takes and returns.
    frames_per_window : int
        1: frames are generated independently (time is folded into the batch).
    """

    img_size = 96
    frames_per_window = 1

    def __init__(self, config: Wav2LipConfig | None = None) -> None:
        super().__init__()
        self.config = config or Wav2LipConfig()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvUnit(6, 16, 7, 1, 3)),  # 96
            _stage(16, 32, 2, 2),  # 48
            _stage(32, 64, 2, 3),  # 24
            _stage(64, 128, 2, 2),  # 12
            _stage(128, 256, 2, 2),  # 6
            _stage(256, 512, 2, 1),  # 3
            nn.Sequential(ConvUnit(512, 512, 3, 1, 0), ConvUnit(512, 512, 1, 1, 0)),  # 1
        ])
        self.audio_encoder = audio_encoder((2, 2, 2, 1))
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvUnit(512, 512, 1, 1, 0)),  # 1   (+512 skip -> 1024)
            _up(1024, 512, 1, stride=1),  # 3   (+512 -> 1024)
            _up(1024, 512, 2),  # 6   (+256 -> 768)
            _up(768, 384, 2),  # 12  (+128 -> 512)
            _up(512, 256, 2),  # 24  (+64 -> 320)
            _up(320, 128, 2),  # 48  (+32 -> 160)
            _up(160, 64, 2),  # 96  (+16 -> 80)
        ])
        self.output_block = nn.Sequential(ConvUnit(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1), nn.Sigmoid())

    @property
    def weights_colour(self) -> str:
        """Channel order the weights expect (``"rgb"`` or ``"bgr"``); inputs are always RGB."""
        return self.config.colour

    def forward_native(self, faces: Tensor, mels: Tensor) -> Tensor:
        """The bare network in the weights' colour order.

        ``(N, 6, 96, 96), (N, 1, 80, 16) -> (N, 3, 96, 96)``, no shape checks.
        """
        audio = self.audio_encoder(mels)  # (N, 512, 1, 1)
        feats = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = audio
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        return self.output_block(x)

    def forward(self, faces: Tensor, mels: Tensor) -> Tensor:
        """Generate faces.

        Parameters
        ----------
        faces:
            ``(B, 6, T, 96, 96)`` or ``(B*T, 6, 96, 96)`` float RGB in [0, 1]: channels 0-2 the
            target with rows 48: zeroed, channels 3-5 the reference.
        mels:
            ``(B, T, 1, 80, 16)`` or ``(B*T, 1, 80, 16)`` float in [-4, 4], one window per frame.

        Returns
        -------
        Tensor
            ``(B, 3, T, 96, 96)`` or ``(B*T, 3, 96, 96)`` (the rank of ``faces``), RGB in [0, 1].
        """
        x, m, t = fold_generator_inputs(faces, mels, self.img_size)
        out = self.forward_native(to_weights_colour(x, self.weights_colour), m)
        return unfold_frames(from_weights_colour(out, self.weights_colour), t)
