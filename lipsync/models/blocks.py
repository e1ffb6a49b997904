"""Building blocks shared by the lip-sync networks, plus colour and shape helpers.

The three convolution units keep the public Wav2Lip release's submodule names
(``conv_block.0`` = convolution, ``conv_block.1`` = BatchNorm), so a release state dict loads
into networks assembled from them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ConvUnit", "ConvTransposeUnit", "LeakyConvUnit", "COLOURS", "check_colour", "swap_rb",
    "to_weights_colour", "from_weights_colour", "audio_encoder", "fold_frames", "unfold_frames",
    "fold_faces", "fold_generator_inputs",
]

#: Channel orders a set of weights can expect.
COLOURS = ("rgb", "bgr")

_Size = int | tuple[int, int]


class ConvUnit(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU; with ``residual=True`` the input is added before the ReLU.

    ``(B, cin, H, W) -> (B, cout, H', W')``; a residual unit needs ``cin == cout`` and an
    unchanged spatial size.
    """

    def __init__(self, cin: int, cout: int, kernel_size: _Size, stride: _Size = 1, padding: _Size = 0,
                 residual: bool = False) -> None:
        super().__init__()
        if residual and cin != cout:
            raise ValueError(f"a residual ConvUnit needs cin == cout, got {cin} -> {cout}")
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeUnit(nn.Module):
    """ConvTranspose2d -> BatchNorm2d -> ReLU (the release's up-sampling unit)."""

    def __init__(self, cin: int, cout: int, kernel_size: _Size, stride: _Size = 1, padding: _Size = 0,
                 output_padding: _Size = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv_block(x))


class LeakyConvUnit(nn.Module):
    """Conv2d -> LeakyReLU(``slope``), no normalisation (the quality discriminator's unit; the
    release's slope is 0.01)."""

    def __init__(self, cin: int, cout: int, kernel_size: _Size, stride: _Size = 1,
                 padding: _Size = 0, slope: float = 0.01) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv_block(x))


def audio_encoder(n_res: Sequence[int] = (2, 2, 2, 1), width: float = 1.0,
                  strides: Sequence[_Size] = (1, (3, 1), 3, (3, 2)),
                  final_kernel: _Size = 3) -> nn.Sequential:
    """Wav2Lip's mel-window encoder: ``(B, 1, 80, 16) -> (B, C, 1, 1)``, ``C = 512 * width``.

    Stages (channels at ``width=1``): 32, 64, 128, 256 with the given ``strides`` (the
    release's: 1, (3, 1), 3, (3, 2)), each followed by ``n_res[i]`` residual units; then a
    valid convolution of ``final_kernel`` (3: the release's 3x3 map -> 1x1) and a 1x1
    convolution.  ``n_res=(2, 2, 2, 1)`` is the generator's, ``(2, 2, 2, 2)`` the expert
    SyncNet's.  With the defaults the flat index of every unit matches the release's
    ``audio_encoder.{k}`` keys.  Other strides / ``final_kernel`` serve longer windows (the
    MARLIN sync expert's 80 x 64).
    """
    chans = [max(1, round(c * width)) for c in (32, 64, 128, 256, 512)]
    layers: list[nn.Module] = []
    cin = 1
    for cout, stride, reps in zip(chans[:4], strides, n_res, strict=True):
        layers.append(ConvUnit(cin, cout, 3, stride, 1))
        layers += [ConvUnit(cout, cout, 3, 1, 1, residual=True) for _ in range(reps)]
        cin = cout
    layers += [ConvUnit(cin, chans[4], final_kernel, 1, 0), ConvUnit(chans[4], chans[4], 1, 1, 0)]
    return nn.Sequential(*layers)


# ----- colour ---------------------------------------------------------------------------------
def check_colour(colour: str) -> str:
    """Validate a colour-order name (``"rgb"`` or ``"bgr"``) and return it lower-cased."""
    value = str(colour).lower()
    if value not in COLOURS:
        raise ValueError(f"unknown colour order {colour!r}; choose from {list(COLOURS)}")
    return value


def swap_rb(x: Tensor, dim: int = 1) -> Tensor:
    """Reverse the order of every group of 3 channels along ``dim`` (RGB <-> BGR).

    ``dim`` must have a multiple of 3 entries: 3 (one image), 6 (target + reference), 15
    (5 frames concatenated frame-major as the release's SyncNet expects).
    """
    n = x.shape[dim]
    if n % 3:
        raise ValueError(f"cannot swap colour channels: dimension {dim} has {n} entries, not a multiple of 3")
    index = torch.arange(n, device=x.device).view(-1, 3).flip(1).reshape(-1)
    return x.index_select(dim, index)


def to_weights_colour(x: Tensor, colour: str, dim: int = 1) -> Tensor:
    """RGB input -> the order the weights expect (no-op for ``"rgb"``)."""
    return swap_rb(x, dim) if colour == "bgr" else x


def from_weights_colour(x: Tensor, colour: str, dim: int = 1) -> Tensor:
    """Output in the weights' order -> RGB (no-op for ``"rgb"``)."""
    return swap_rb(x, dim) if colour == "bgr" else x


# ----- time folding ---------------------------------------------------------------------------
def fold_frames(x: Tensor) -> tuple[Tensor, int | None]:
    """``(B, C, T, H, W) -> ((B*T, C, H, W), T)``, clip index outermost; 4-D passes through.

    Returns the folded tensor and ``T`` (``None`` when the input was already 4-D).
    """
    if x.ndim == 5:
        b, c, t, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), t
    if x.ndim == 4:
        return x, None
    raise ValueError(f"expected a 4-D (B*T, C, H, W) or 5-D (B, C, T, H, W) tensor, "
                     f"got shape {tuple(x.shape)}")


def unfold_frames(x: Tensor, t: int | None) -> Tensor:
    """Inverse of :func:`fold_frames`: ``(B*T, C, H, W) -> (B, C, T, H, W)`` when ``t`` is set."""
    if t is None:
        return x
    bt, c, h, w = x.shape
    return x.view(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def fold_faces(faces: Tensor, img_size: int, frames_per_window: int = 1,
               channels: int = 6) -> tuple[Tensor, int | None]:
    """Check generator faces ``(B, C, T, S, S)`` / ``(B*T, C, S, S)`` and fold them to
    ``(B*T, C, S, S)``; returns ``T`` too (``None`` for 4-D input)."""
    if faces.ndim not in (4, 5) or faces.shape[1] != channels:
        hint = " (arguments swapped? the order is generator(faces, mels))" if faces.ndim == 5 and \
            tuple(faces.shape[-2:]) == (80, 16) else ""
        raise ValueError(f"faces must be (B, {channels}, T, H, W) or (B*T, {channels}, H, W), "
                         f"got {tuple(faces.shape)}{hint}")
    if tuple(faces.shape[-2:]) != (img_size, img_size):
        raise ValueError(f"faces must be {img_size}x{img_size} for this model, got {tuple(faces.shape)}")
    folded, t = fold_frames(faces)
    n = t if t is not None else folded.shape[0]
    if n % frames_per_window:
        raise ValueError(f"this model encodes {frames_per_window}-frame windows; got {n} frames")
    return folded, t


def fold_generator_inputs(faces: Tensor, mels: Tensor, img_size: int,
                          frames_per_window: int = 1) -> tuple[Tensor, Tensor, int | None]:
    """Check and fold the common generator inputs (see ``docs/usage/models.md``).

    Parameters
    ----------
    faces:
        ``(B, 6, T, S, S)`` or ``(B*T, 6, S, S)`` float, ``S = img_size``.
    mels:
        ``(B, T, 1, 80, 16)`` or ``(B*T, 1, 80, 16)`` float.
    img_size:
        Expected face side ``S``.
    frames_per_window:
        ``T`` (or, for 4-D inputs, ``B*T``) must be a multiple of it.

    Returns
    -------
    faces ``(B*T, 6, S, S)``, mels ``(B*T, 1, 80, 16)`` (clip index outermost) and ``T``
    (``None`` for 4-D inputs).
    """
    folded, t = fold_faces(faces, img_size, frames_per_window)
    if mels.ndim == 5:
        if t is None or tuple(mels.shape[:2]) != (faces.shape[0], t):
            raise ValueError(f"mels {tuple(mels.shape)} do not match faces {tuple(faces.shape)}: "
                             "expected (B, T, 1, 80, 16) with faces (B, 6, T, H, W)")
        mels = mels.reshape(-1, *mels.shape[2:])
    if mels.ndim != 4 or tuple(mels.shape[1:]) != (1, 80, 16) or mels.shape[0] != folded.shape[0]:
        raise ValueError(f"mels must be (B, T, 1, 80, 16) or (B*T, 1, 80, 16) matching faces "
                         f"{tuple(faces.shape)}, got {tuple(mels.shape)}")
    return folded, mels, t
