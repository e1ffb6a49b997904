"""SyncNet v2 (syncnet_python's ``S``), the network behind the LSE-D / LSE-C metrics.

Layer structure and key names (``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``)
follow the public ``syncnet_v2.model`` so it loads unchanged.  Those weights expect BGR crops
with raw 0-255 values; :meth:`SyncNetV2.forward_lip` takes RGB in [0, 1] and converts.
Evaluation only: build it, load the weights, call ``eval()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .blocks import to_weights_colour
from .config import ModelConfig

__all__ = ["SyncNetV2", "SyncNetV2Config"]


@dataclass(frozen=True)
class SyncNetV2Config(ModelConfig):
    """Sizes of SyncNet v2; the defaults are the released model's."""

    colour: str = "bgr"  # the released weights were trained on OpenCV (BGR) frames
    pixel_scale: float = 255.0  # the released weights take raw 0-255 pixel values
    embed_dim: int = 1024  # output width of both branches


def _conv(cin: int, cout: int, kernel: tuple[int, int], padding: tuple[int, int] = (1, 1)) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, 1, padding), nn.BatchNorm2d(cout), nn.ReLU()]


def _conv3d(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
            padding: tuple[int, int, int] = (0, 1, 1)) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride, padding), nn.BatchNorm3d(cout), nn.ReLU()]


def _fc(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetV2(nn.Module):
    """Audio (MFCC) and lip (5-frame colour clip) embeddings compared by Euclidean distance.

    The two branches are not L2-normalised (the metrics use raw distances).  Module indices
    inside each ``nn.Sequential`` match the release, including its no-op 1x1 max-pool.
    """

    n_frames = 5
    crop_size = 224

    def __init__(self, config: SyncNetV2Config | None = None) -> None:
        super().__init__()
        self.config = config or SyncNetV2Config()
        self.netcnnaud = nn.Sequential(
            *_conv(1, 64, (3, 3)), nn.MaxPool2d((1, 1), (1, 1)),  # 13x20
            *_conv(64, 192, (3, 3)), nn.MaxPool2d((3, 3), (1, 2)),  # 11x9
            *_conv(192, 384, (3, 3)),
            *_conv(384, 256, (3, 3)),
            *_conv(256, 256, (3, 3)), nn.MaxPool2d((3, 3), (2, 2)),  # 5x4
            *_conv(256, 512, (5, 4), (0, 0)),  # 1x1
        )
        self.netfcaud = _fc(self.config.embed_dim)
        self.netfclip = _fc(self.config.embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 1x54x54
            *_conv3d(96, 256, (1, 5, 5), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 13x13
            *_conv3d(256, 256, (1, 3, 3)),
            *_conv3d(256, 256, (1, 3, 3)),
            *_conv3d(256, 256, (1, 3, 3)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),  # 6x6
            *_conv3d(256, 512, (1, 6, 6), padding=(0, 0, 0)),  # 1x1
        )

    @property
    def weights_colour(self) -> str:
        """Channel order the weights expect; :meth:`forward_lip` takes RGB."""
        return self.config.colour

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """``(B, 1, 13, 20)`` MFCC windows (20 steps at 100 Hz = the 5 frames at 25 fps that
        :meth:`forward_lip` sees) -> ``(B, embed_dim)``."""
        if mfcc.ndim != 4 or tuple(mfcc.shape[1:]) != (1, 13, 20):
            raise ValueError(f"MFCC windows must be (B, 1, 13, 20), got {tuple(mfcc.shape)}")
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, lips: Tensor) -> Tensor:
        """``(B, 3, 5, 224, 224)`` float RGB in [0, 1] -> ``(B, embed_dim)``."""
        if lips.ndim != 5 or tuple(lips.shape[1:]) != (3, self.n_frames, self.crop_size, self.crop_size):
            raise ValueError(f"lip clips must be (B, 3, 5, 224, 224), got {tuple(lips.shape)}")
        x = to_weights_colour(lips, self.weights_colour) * self.config.pixel_scale
        return self.netfclip(self.netcnnlip(x).flatten(1))

    def forward(self, mfcc: Tensor, lips: Tensor) -> tuple[Tensor, Tensor]:
        """Both embeddings: ``(forward_aud(mfcc), forward_lip(lips))``."""
        return self.forward_aud(mfcc), self.forward_lip(lips)
