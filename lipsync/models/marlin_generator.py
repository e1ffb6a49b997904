"""MARLIN-conditioned lip-sync generator (the paper's "Wav2Lip + ViT + MARLIN").

Following the MARLIN paper's description (no code was released):

- the face encoder is MARLIN's ViT, frozen, on 16-frame windows upscaled to its input size
  (224 for the released sizes, 112 for ``vit_tiny``);
- its tokens ``(B, N, E)`` become per-frame maps ``(B*16, E/2, h, w)`` (each tube token covers
  2 frames; its E channels split into two halves, one per frame);
- the audio embedding of each frame's mel window, projected to ``E/2`` channels, is expanded to
  ``h x w`` and concatenated, so the first decoder block takes ``E + 6`` channels (774 for ViT-B);
- no U-Net skips: instead a resized copy of the 6-channel input (masked target + reference) is
  concatenated at every decoder scale;
- a sigmoid gives RGB in [0, 1];
- optionally (``audio_skip`` > 0, our addition, used by the tiny sizes) a narrow projection of the
  audio embedding is broadcast and concatenated at every decoder scale as well.  In the paper's
  layout the audio reaches the mouth only through the coarse token grid (7x7 for ``vit_tiny``),
  and a small decoder trained for minutes on a CPU learns to copy the reference's mouth long
  before it learns that route; next to the pixels it draws, the audio is found within a few
  hundred steps;
- optionally (``reference_mask``, our addition, used by the tiny sizes) a box around the mouth is
  blanked in the reference frames before the encoder and the decoder see them.  Inference takes
  the input frames themselves as the reference, so the reference's mouth is the original mouth,
  in the right place: a generator that can see it learns early to copy it (it gets the lips'
  appearance right) and the dub then follows the original speech.  Without it the mouth can only
  come from the audio.  ``reference_fill="edges"`` fills the box with skin interpolated from its
  border instead of black: a black box leaves the skin's colour under the mouth to be guessed,
  and the guess shows in the dub as a lighter patch around the lips.  ``reference_fill="rest"``
  shows the window's most closed mouth there instead (sharp lips in their colour, never open).
  On synthetic data the box is not needed: counterfactual references (``lipsync.train --reference
  counterfactual``) show the target frames themselves speaking other speech, as inference does, so
  copying the visible mouth never pays;
- optionally (``composite``, our addition) the output is a learned per-pixel mix of the drawn face
  and the reference, so what the reference already shows right is copied sharp;
- optionally (``warp``, our addition, with ``composite``) the reference is first moved by a
  smooth flow field the decoder predicts at a quarter of the face size: with
  ``reference_fill="rest"`` the sharp closed lips can be pulled open to where this frame's audio
  puts them, leaving only the gap between them (teeth, mouth interior) to be drawn;
- optionally (``mouth_input``, our addition) the decoder is told the mouth's shape (its opening
  and width, face-mesh measures): the measured ones of the target frames in training, and at
  inference what its own audio head predicts from each frame's audio.  Audio -> shape -> face in
  two steps, as landmark-driven talking-face methods do: given the shape, drawing the mouth has
  one right answer, so L1 no longer pays a generator for a blurred average of the openings the
  audio leaves possible.  With ``mouth_map`` that shape is also drawn, as lip-gap ellipses where
  the frame's landmarks put the mouth, and with ``mouth_teeth`` the decoder is told how much tooth
  shows (read from the frames' pixels in training), which the lips' landmarks cannot say.

Which frames the encoder sees
-----------------------------
The **reference** frames (channels 3-5 of ``faces``), by default.  Reasons: MARLIN was
pretrained on whole faces, so a half-black masked target is far outside what its frozen features
describe; the masked target's information (pose, upper face, the exact frame to paint into)
already reaches the decoder at every scale through the injected 6-channel input; and the
reference carries what the decoder cannot get from a small resized image: identity, teeth and
lip appearance, summarised by MARLIN across 16 frames.  As in Wav2Lip, the reference is a
different window of the same video during training and the unmasked frames themselves at
inference.  ``encoder_frames="masked"`` (the masked target) is kept as an ablation.

The "Wav2Lip + ViT" baseline is the same network with ``encoder_init="random"`` and
``freeze_encoder=False`` (registry names ``vit_lip_*``), to measure the value of pretraining.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marlin.config import get_config

from .blocks import ConvUnit, audio_encoder, fold_faces, fold_generator_inputs, unfold_frames
from .config import ModelConfig
from .marlin_encoder import build_encoder, load_marlin_weights, resize_clip, tokens_to_frame_maps

__all__ = ["MarlinLipGenerator", "MarlinLipConfig", "decoder_scales", "edge_fill", "inference_reference",
           "mouth_ellipses", "mouth_shape_units", "needs_geometry", "needs_openings",
           "needs_rest", "neighbour_reference", "opening_units",
           "rest_frames", "takes_reference_opening", "warp_image"]


@dataclass(frozen=True)
class MarlinLipConfig(ModelConfig):
    """Sizes of the MARLIN-conditioned generator."""

    marlin: str = "vit_base"  # MARLIN registry size of the encoder (marlin.available_models())
    img_size: int = 96  # face side in and out (96 default; 192 and 256 for sharper mouths)
    encoder_frames: str = "reference"  # frames the encoder sees: "reference" or "masked"
    encoder_init: str = "marlin"  # "marlin": load MARLIN weights; "random": ViT baseline
    freeze_encoder: bool = True  # False trains the ViT too (the "Wav2Lip + ViT" baseline)
    decoder_channels: tuple[int, ...] = (512, 256, 128, 64, 32)  # per decoder scale, coarse first
    n_res: int = 2  # residual units per decoder scale
    audio_width: float = 1.0  # width multiplier of the Wav2Lip audio encoder
    output_channels: int = 32  # width of the last 3x3 convolution before the RGB 1x1 (Wav2Lip: 32)
    audio_skip: int = 0  # audio channels also given to every decoder scale (0: the paper's layout)
    # box (x1, y1, x2, y2, fractions of the face side) blanked in the reference before use; None: off
    reference_mask: tuple[float, float, float, float] | None = None
    # what fills that box: "zero" (black); "edges": a smooth patch interpolated from the pixels
    # around the box, so the reference keeps the skin's colour and shading but not the mouth;
    # "mean": the box's mean over the reference's 16-frame window, so the lips' colour and resting
    # place are shown but not how far the mouth is open in any one frame; "rest": the box of the
    # window's most closed mouth (``rest``, one frame index per window, from landmark openings: see
    # ``rest_frames``), so the lips are shown sharp, in their colour, and always closed
    reference_fill: str = "zero"
    # width of an optional full-resolution refiner (0: none): two 3x3 units on what the output block
    # sees, whose 1x1 RGB head starts at zero and is added to the output block's logits, so a
    # trained generator gains it with --init --set refine_channels=K unchanged until it trains
    refine_channels: int = 0
    # the output as a per-pixel mix of what the decoder draws and the (full-size) reference:
    # ``out = (1 - a) * drawn + a * reference`` with ``a`` from a 1x1 head on the output block's
    # features, starting near 0 (logit -6) so trained weights gain it unchanged (--init --set).
    # Skin, chin, background and the lips' texture are copied sharp where they fit; the decoder
    # only has to draw what differs (mostly how far the mouth is open).
    composite: bool = False
    # with ``composite``: move the reference by a per-pixel flow before the mix, predicted from the
    # decoder at a quarter of the face size (smooth by construction) and starting at zero (an
    # identity warp), so trained weights gain it unchanged (--init --set warp=true).  Deformation
    # keeps what copying keeps (sharp lips in their colour) where the mouth has moved: the lips of
    # a closed rest mouth can be stretched open rather than redrawn as a blur (how far that got on
    # the synthetic set: checkpoints/README.md).
    warp: bool = False
    # with ``warp``: width of a path that gives the output block the moved reference at full size
    # (0: none).  Without it the decoder draws the lips from its own coarse features and the
    # unmoved reference, softly; with it the drawn lips can start from the moved reference's sharp
    # edges and change only what the warp cannot (the gap, the teeth).  Two 3x3 units on the moved
    # reference and what the output block sees, then a 1x1 added to the output block's features that
    # starts at zero, so trained weights gain it unchanged (--init --set warp_draw=K).  Measured once
    # (24, 2000 steps on the synthetic set): no better than the same run without it
    warp_draw: int = 0
    # tell the decoder the mouth's shape, (opening, width) as lipsync.data.sync_measure measures
    # them: a bias at every decoder scale from the measured shape of each target frame in
    # training (``mouth_shape``), from ``mouth_head`` (a small MLP on the frame's audio embedding,
    # trained by ``lipsync.train --opening-wt``) at inference.  The biases start at zero, so
    # trained weights gain it unchanged (--init --set mouth_input=true)
    mouth_input: bool = False
    # with ``mouth_input``: also tell the decoder how far the reference frame's own mouth is open
    # (``reference_opening``, the measured opening of each reference frame), a second bias at every
    # scale next to the shape's.  Together they say how far the mouth has to move, and which way,
    # where the decoder would otherwise have to read the reference's opening from its pixels.
    # Inference measures it from the face-mesh landmarks; training reads it from the reference with
    # the frozen opening reader (lipsync.train --reader).  Where it is unknown (NaN, or not given)
    # the frame's own opening is taken to be the one the audio asks for.  The biases start at zero,
    # so trained weights gain it unchanged (--init --set mouth_reference=true)
    mouth_reference: bool = False
    # with ``mouth_input``: also draw the mouth's shape for the decoder, where the biases above only
    # tell it as numbers: two soft ellipses at every decoder scale, the lip gap the shape asks for and
    # the reference frame's own (its opening), placed by each frame's face-mesh mouth corners and
    # sized by its eye-corner distance (``mouth_geometry``, ``lipsync.data.sync_measure.mouth_geometry``
    # of the landmarks, in training and at inference).  A convolution of them is added to the
    # features before each block; it starts at zero, so trained weights gain it unchanged (--init
    # --set mouth_map=true).  Frames without landmarks get no ellipses (all zero)
    mouth_map: bool = False
    # with ``mouth_input``: also tell the decoder how much tooth shows, which the lips' landmarks
    # cannot say (an "s" shows teeth through a small gap, an "oh" none through a large one):
    # ``lipsync.data.sync_measure.mouth_teeth``, the tooth-like area inside the inner lips, measured
    # on each target frame in training (``mouth_teeth``), predicted from the frame's audio by
    # ``teeth_head`` (trained by ``lipsync.train --opening-wt``) at inference.  A bias at every scale
    # and, with ``mouth_map``, a third map: the asked-for gap's ellipse scaled by the teeth.  All
    # start at zero, so trained weights gain it unchanged (--init --set mouth_teeth=true).  Measured
    # once (from the shipped default, 1500 steps on the synthetic set): no better than the same run
    # without it (checkpoints/README.md, "Telling the teeth")
    mouth_teeth: bool = False
    # with ``mouth_input``: how far from the typical shape (``MOUTH_SHAPE_MEAN``) the opening
    # ``mouth_head`` predicts is moved before the decoder sees it, as a multiple of how far it was
    # predicted (1: as predicted).  The decoder learned from measured shapes but also sees the
    # reference's own mouth, and draws a mouth that moves less than the shape it is told; a larger
    # swing makes up for part of it (checkpoints/README.md: with the counterfactual checkpoint, 1.5
    # lifted the correlation of the dub's opening with the audio from 0.78 to 0.81 on 8 held-out
    # pairs, but only from 0.77 to 0.78 on all 16).  Measured shapes given in training are used as
    # they are
    mouth_gain: float = 1.0
    # with ``composite``: added to the mix's logit, so that > 0 keeps more of the (moved) reference
    # (at inference, the frame itself) and < 0 draws more.  A trained mix weighs a soft drawn mouth
    # against the frame's own sharp pixels for its training loss, which also pays for visible
    # opening (mouth, reader and sync terms); a positive bias trades a little of the mouth's motion
    # for fewer soft redraws of pixels that were already right (the shipped default has 0.75;
    # what each value did: checkpoints/README.md).  It changes no weight, so any checkpoint can be
    # re-saved with it
    copy_bias: float = 0.0
    # with ``composite`` and ``mouth_input``, at inference: a further logit bias towards the
    # reference in frames whose own mouth is already open about as far as this frame's audio asks,
    # ``copy_gate * exp(-((said - own) / copy_gate_width)**2)``, ``said`` the opening ``mouth_head``
    # predicts and ``own`` the reference frame's opening measured from its face-mesh landmarks
    # (``reference_opening``).  In eval mode only: inference, and the val figures of a training
    # run; in train mode the mix learns without it.  There the frame's own sharp lips are the
    # right answer and the decoder's soft redraw of them only costs; where the audio asks for
    # another opening the mix is left as trained.  It changes no weight (what it did:
    # checkpoints/README.md)
    copy_gate: float = 0.0
    copy_gate_width: float = 0.03  # in opening units (closed about 0, wide open 0.3-0.5)
    # the reference inference gives the generator: "same" (the frames themselves, as Wav2Lip; use
    # with reference_mask, or the dub follows the original speech) or "neighbour" (the adjacent
    # 16-frame window of the same face, like training's reference from another window: its mouth
    # shows the lips' colour and texture but is unrelated to this window's original speech)
    inference_reference: str = "same"

    def __post_init__(self) -> None:
        super().__post_init__()
        get_config(self.marlin)  # raises ValueError naming the valid sizes
        if self.encoder_frames not in ("reference", "masked"):
            raise ValueError(f"encoder_frames {self.encoder_frames!r}: choose 'reference' or 'masked'")
        box = self.reference_mask
        ok = box is None or (len(box) == 4 and 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1)
        if not ok:
            raise ValueError("reference_mask must be (x1, y1, x2, y2) fractions with x1 < x2, y1 < y2, "
                             f"got {box}")
        if self.reference_fill not in ("zero", "edges", "mean", "rest"):
            raise ValueError(f"reference_fill {self.reference_fill!r}: "
                             "choose 'zero', 'edges', 'mean' or 'rest'")
        if self.inference_reference not in ("same", "neighbour"):
            raise ValueError(f"inference_reference {self.inference_reference!r}: "
                             "choose 'same' or 'neighbour'")
        if self.warp and not self.composite:
            raise ValueError("warp moves the reference the composite mixes in: set composite=True too")
        if not (math.isfinite(self.mouth_gain) and self.mouth_gain > 0):
            raise ValueError(f"mouth_gain must be a number > 0, got {self.mouth_gain}")
        if not math.isfinite(self.copy_bias):
            raise ValueError(f"copy_bias must be a finite number, got {self.copy_bias}")
        if self.copy_bias and not self.composite:
            raise ValueError("copy_bias shifts the composite's mix: set composite=True too")
        if self.mouth_map and not self.mouth_input:
            raise ValueError("mouth_map draws the mouth shape mouth_input tells: set mouth_input=True too")
        if self.mouth_teeth and not self.mouth_input:
            raise ValueError("mouth_teeth is told next to the mouth shape: set mouth_input=True too")
        if self.mouth_reference and not self.mouth_input:
            raise ValueError("mouth_reference is told next to the mouth shape: set mouth_input=True too")
        if not (math.isfinite(self.copy_gate) and self.copy_gate >= 0):
            raise ValueError(f"copy_gate must be a finite number >= 0, got {self.copy_gate}")
        if self.copy_gate and not (self.composite and self.mouth_input):
            raise ValueError("copy_gate compares the audio head's opening with the frame's and shifts the "
                             "composite's mix: set composite=True and mouth_input=True too")
        if not (math.isfinite(self.copy_gate_width) and self.copy_gate_width > 0):
            raise ValueError(f"copy_gate_width must be a number > 0, got {self.copy_gate_width}")
        if self.warp_draw < 0:
            raise ValueError(f"warp_draw must be >= 0, got {self.warp_draw}")
        if self.warp_draw and not self.warp:
            raise ValueError("warp_draw gives the output block the moved reference: set warp=True too")
        if self.refine_channels < 0:
            raise ValueError(f"refine_channels must be >= 0, got {self.refine_channels}")
        if self.audio_skip < 0:
            raise ValueError(f"audio_skip must be >= 0, got {self.audio_skip}")
        if self.encoder_init not in ("marlin", "random"):
            raise ValueError(f"encoder_init {self.encoder_init!r}: choose 'marlin' or 'random'")
        need = len(decoder_scales(get_config(self.marlin).grid[1], self.img_size))
        if len(self.decoder_channels) < need:
            raise ValueError(f"img_size {self.img_size} needs {need} decoder_channels, "
                             f"got {len(self.decoder_channels)}: {self.decoder_channels}")


def edge_fill(images: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """A smooth patch for ``images[..., y1:y2, x1:x2]`` made from the pixels just outside the box.

    The mean of two linear interpolations: down each column between the rows above and below
    the box, and along each row between the columns left and right of it (a border on the image
    edge uses the box's own outermost row or column).  Written by hand: it is a few tensor ops,
    differentiable and batched, where an inpainting library would work on one uint8 image at a time.

    Parameters
    ----------
    images : (N, C, S, S)
    box : x1, y1, x2, y2 pixel bounds (exclusive ends), inside the image

    Returns
    -------
    Tensor
        (N, C, y2 - y1, x2 - x1)
    """
    x1, y1, x2, y2 = box
    h, w = images.shape[-2:]
    top = images[..., max(y1 - 1, 0), x1:x2].unsqueeze(-2)  # (N, C, 1, bw)
    bottom = images[..., min(y2, h - 1), x1:x2].unsqueeze(-2)
    left = images[..., y1:y2, max(x1 - 1, 0)].unsqueeze(-1)  # (N, C, bh, 1)
    right = images[..., y1:y2, min(x2, w - 1)].unsqueeze(-1)
    a = torch.arange(1, y2 - y1 + 1, device=images.device, dtype=images.dtype)[:, None] / (y2 - y1 + 1)
    b = torch.arange(1, x2 - x1 + 1, device=images.device, dtype=images.dtype)[None, :] / (x2 - x1 + 1)
    return 0.5 * (top * (1 - a) + bottom * a + left * (1 - b) + right * b)


#: pixels (at the face size) of warp flow per unit of the flow head's output: as with the
#: composite, Adam moves a zero-initialised head by about the learning rate per step, and lips
#: move by several pixels between a closed and an open mouth.
WARP_GAIN = 8.0

#: scale of the composite head's logits.  Adam moves each weight by about the learning rate per
#: step, so unscaled, a mix starting near 0 (logit -6) would need ~10^4 steps at 5e-4 to open up;
#: scaled, a few hundred.
COMPOSITE_GAIN = 32.0

#: scale of the mouth-shape biases (``mouth_input``), for the same reason: zero-initialised, they
#: would need thousands of steps at 5e-4 to reach the size of the decoder's features (measured: a
#: run without it made little of the shape in 1000 steps).
MOUTH_BIAS_GAIN = 8.0


def neighbour_reference(frames: Tensor, window: int) -> Tensor:
    """The reference ``inference_reference="neighbour"`` gives: each window of ``frames`` replaced by
    the window before it (the first by the second).

    Training takes the reference from another, non-overlapping window of the same clip, so its
    mouth is unrelated to the target's; the adjacent window is the nearest such one at inference
    (the face has barely moved).  With a single window there is no other: it is rolled by half a
    window, so each frame's reference is 0.3 s (at 25 fps) away from it.

    Parameters
    ----------
    frames : (B*window, ...) consecutive windows of one face.
    window : frames per window.
    """
    n = frames.shape[0]
    if n % window:
        raise ValueError(f"{n} frames are not whole windows of {window}")
    b = n // window
    if b == 1:
        return torch.roll(frames, window // 2, dims=0)
    order = torch.arange(b, device=frames.device) - 1
    order[0] = 1
    x = frames.reshape(b, window, *frames.shape[1:])
    return x[order].reshape(frames.shape)


def needs_rest(model: nn.Module) -> bool:
    """Whether ``model`` takes ``rest`` (a MARLIN generator with ``reference_fill="rest"``)."""
    config = getattr(model, "config", None)
    return getattr(config, "reference_fill", None) == "rest" and (
        getattr(config, "reference_mask", None) is not None)


def takes_reference_opening(model: nn.Module) -> bool:
    """Whether ``model`` uses ``reference_opening`` (``copy_gate`` or ``mouth_reference``)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "copy_gate", 0.0)) or bool(getattr(config, "mouth_reference", False))


def needs_geometry(model: nn.Module) -> bool:
    """Whether inference should give ``model`` each frame's ``mouth_geometry`` (``mouth_map``)."""
    return bool(getattr(getattr(model, "config", None), "mouth_map", False))


def needs_openings(model: nn.Module) -> bool:
    """Whether inference should give ``model`` the mouth opening of each input frame: for ``rest``
    (:func:`needs_rest`), or as ``reference_opening`` (:func:`takes_reference_opening`)."""
    return needs_rest(model) or takes_reference_opening(model)


def rest_frames(openings: Tensor, window: int) -> Tensor:
    """The index of the most closed mouth in each window (``reference_fill="rest"``).

    Parameters
    ----------
    openings : (W*window,) float mouth opening of each reference frame
        (``lipsync.data.sync_measure.mouth_opening``), NaN where unknown.
    window : frames per window.

    Returns
    -------
    (W,) long indices in ``0 .. window-1``; 0 for a window with no known opening.
    """
    if openings.ndim != 1 or openings.shape[0] % window:
        raise ValueError(f"openings must be (W*{window},), got {tuple(openings.shape)}")
    x = openings.float().reshape(-1, window)
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x).argmin(1)


def inference_reference(model: nn.Module, frames: Tensor, openings: Tensor | None,
                        window: int, geometry: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The reference and extra keyword inputs inference gives ``model`` for consecutive windows of
    one face: the frames themselves, or their neighbouring windows (``inference_reference``); for
    ``reference_fill="rest"``, ``rest`` from the mouth ``openings`` of those reference frames;
    with ``copy_gate`` or ``mouth_reference``, those openings themselves as ``reference_opening``;
    and with ``mouth_map``, ``geometry`` as ``mouth_geometry`` (the frames' own: the mouth is
    drawn where each frame has it, whichever reference is shown).

    Parameters
    ----------
    model : any generator (one without these config fields gets ``frames`` and no extra input).
    frames : (N, ...) the input frames, N a multiple of ``window``.
    openings : (N,) float mouth opening of each frame (NaN where unknown), or None (all unknown).
    window : frames per window.
    geometry : (N, 5) ``lipsync.data.sync_measure.mouth_geometry`` of each frame (NaN rows where
        unknown), or None.
    """
    config = getattr(model, "config", None)
    if getattr(config, "inference_reference", "same") == "neighbour":
        frames = neighbour_reference(frames, window)
        openings = None if openings is None else neighbour_reference(openings, window)
    extra = {}
    if needs_geometry(model) and geometry is not None:
        extra["mouth_geometry"] = geometry.float()
    if not needs_openings(model):
        return frames, extra
    if openings is None:
        openings = torch.full((frames.shape[0],), float("nan"))
    if needs_rest(model):
        extra["rest"] = rest_frames(openings, window)
    if takes_reference_opening(model):
        extra["reference_opening"] = openings.float()
    return frames, extra


def warp_image(images: Tensor, flow: Tensor) -> Tensor:
    """``images`` sampled at each pixel plus ``flow`` (bilinear; borders repeat).

    Parameters
    ----------
    images : (N, C, H, W)
    flow : (N, 2, h, w) x, y displacement in pixels of ``images``; resized (bilinear) to H x W
        when smaller, so a coarse flow gives a smooth warp.  Zero flow returns ``images``.

    Returns
    -------
    Tensor
        (N, C, H, W) float32 (``grid_sample`` has no half-precision CPU kernel).
    """
    h, w = images.shape[-2:]
    if flow.shape[-2:] != (h, w):
        flow = F.interpolate(flow.float(), size=(h, w), mode="bilinear", align_corners=False)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=images.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=images.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) pixel centres
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    grid = base + flow.float().permute(0, 2, 3, 1) * scale
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class WarpSampler(nn.Module):
    """:func:`warp_image` as a module (no weights), so training can read the warped reference with
    a forward hook (``lipsync.train --warp-wt``) without the generator returning it."""

    def forward(self, images: Tensor, flow: Tensor) -> Tensor:
        return warp_image(images, flow)


def decoder_scales(grid: int, img_size: int) -> list[int]:
    """Spatial sizes of the decoder's blocks: the token grid, then ``img_size / 2**j`` doubling
    up to ``img_size``, starting at the smallest such size of at least 1.5 x the grid.

    ``decoder_scales(14, 96) == [14, 24, 48, 96]``, ``(14, 256) -> [14, 32, 64, 128, 256]``,
    ``(7, 96) -> [7, 12, 24, 48, 96]``.
    """
    if img_size < 2 * grid:
        raise ValueError(f"img_size {img_size} must be at least twice the token grid {grid}")
    j = 0
    while img_size % 2 ** (j + 1) == 0 and img_size // 2 ** (j + 1) >= math.ceil(1.5 * grid):
        j += 1
    return [grid] + [img_size // 2**i for i in range(j, -1, -1)]


class MarlinLipGenerator(nn.Module):
    """Generator conditioned on frozen MARLIN tokens of 16-frame windows.

    Attributes
    ----------
    img_size : int
        Face side taken and returned (``config.img_size``).
    frames_per_window : int
        16: ``T`` (or ``B*T`` for 4-D input) must be a multiple of it.
    encoder : marlin.model.MarlinEncoder
        Frozen (``requires_grad=False``, always in eval mode) unless ``config.freeze_encoder``
        is False.  Load MARLIN weights with :meth:`load_marlin`.
    """

    #: modules a config change may add to trained weights (``--init --set``): they start neutral
    grown_prefixes = ("refine.", "composite.", "warp.", "warp_draw.", "mouth_head.", "mouth_bias.",
                      "reference_bias.", "mouth_map_conv.", "teeth_head.", "teeth_bias.", "teeth_map_conv.")
    #: config fields a change may widen trained weights by (``--init --set``): see :meth:`grown_state`
    widened_fields = ("decoder_channels", "output_channels")

    def __init__(self, config: MarlinLipConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MarlinLipConfig()
        self.marlin_config = get_config(cfg.marlin)
        self.img_size = cfg.img_size
        self.frames_per_window = self.marlin_config.n_frames
        self.encoder = build_encoder(cfg.marlin)
        half = self.marlin_config.encoder_dim // self.marlin_config.tubelet_size
        self.audio_encoder = audio_encoder((2, 2, 2, 1), cfg.audio_width)
        audio_channels = self.audio_encoder[-1].conv_block[0].out_channels
        self.audio_proj = ConvUnit(audio_channels, half, 1)
        # channels concatenated after the features at every scale: the input, resized; audio maps
        self.extra_channels = extra = 6 + cfg.audio_skip
        if cfg.audio_skip:
            self.audio_skip_proj = ConvUnit(audio_channels, cfg.audio_skip, 1)
        self.scales = decoder_scales(self.marlin_config.grid[1], cfg.img_size)
        blocks = []
        cin = 2 * half
        for cout in cfg.decoder_channels[: len(self.scales)]:
            units = [ConvUnit(cin + extra, cout, 3, 1, 1)]
            units += [ConvUnit(cout, cout, 3, 1, 1, residual=True) for _ in range(cfg.n_res)]
            blocks.append(nn.Sequential(*units))
            cin = cout
        self.decoder_blocks = nn.ModuleList(blocks)
        width = cfg.output_channels
        self.output_block = nn.Sequential(  # the input again at full size, a 3x3 unit, a 1x1 to RGB
            ConvUnit(cin + extra, width, 3, 1, 1), nn.Conv2d(width, 3, 1), nn.Sigmoid())
        if cfg.refine_channels:
            k = cfg.refine_channels
            head = nn.Conv2d(k, 3, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.refine = nn.Sequential(ConvUnit(cin + extra, k, 3, 1, 1),
                                        ConvUnit(k, k, 3, 1, 1, residual=True), head)
        if cfg.composite:
            self.composite = nn.Conv2d(width, 1, 1)
            nn.init.zeros_(self.composite.weight)
            nn.init.constant_(self.composite.bias, -6.0 / COMPOSITE_GAIN)  # a = 0.0025: drawn, unchanged
        if cfg.warp:
            # the flow head reads the last decoder block at or below a quarter of the face size
            self.warp_block = max([i for i, size in enumerate(self.scales) if size <= cfg.img_size // 4],
                                  default=0)
            # two 3x3 units on that block's output and the input and audio maps at its size, then a
            # 3x3 to (x, y) starting at zero: a single linear layer on features trained to draw
            # barely learns a flow (measured: its lips' warp loss fell 4% in 350 steps)
            k = 32
            head = nn.Conv2d(k, 2, 3, 1, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.warp = nn.Sequential(ConvUnit(cfg.decoder_channels[self.warp_block] + extra, k, 3, 1, 1),
                                      ConvUnit(k, k, 3, 1, 1, residual=True), head)
            self.warp_sampler = WarpSampler()
        if cfg.warp_draw:
            k = cfg.warp_draw
            head = nn.Conv2d(k, width, 1)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.warp_draw = nn.Sequential(ConvUnit(cin + extra + 3, k, 3, 1, 1),
                                           ConvUnit(k, k, 3, 1, 1, residual=True), head)
        if cfg.mouth_input:
            self.mouth_head = nn.Sequential(nn.Linear(audio_channels, 64), nn.ReLU(), nn.Linear(64, 2))
            widths = [2 * half, *cfg.decoder_channels[: len(self.scales)]]  # what each block (and the
            self.mouth_bias = nn.ModuleList(nn.Linear(2, c) for c in widths)  # output block) takes in
            for bias in self.mouth_bias:
                nn.init.zeros_(bias.weight)
                nn.init.zeros_(bias.bias)
        if cfg.mouth_reference:
            self.reference_bias = nn.ModuleList(nn.Linear(1, c) for c in widths)
            for bias in self.reference_bias:
                nn.init.zeros_(bias.weight)
                nn.init.zeros_(bias.bias)
        if cfg.mouth_map:
            # a 3x3 convolution of the two ellipses per block (and the output block), added to what
            # it takes in; zero at the start
            self.mouth_map_conv = nn.ModuleList(nn.Conv2d(2, c, 3, 1, 1) for c in widths)
            for conv in self.mouth_map_conv:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        if cfg.mouth_teeth:
            self.teeth_head = nn.Sequential(nn.Linear(audio_channels, 64), nn.ReLU(), nn.Linear(64, 1))
            self.teeth_bias = nn.ModuleList(nn.Linear(1, c) for c in widths)
            self.teeth_map_conv = nn.ModuleList(nn.Conv2d(1, c, 3, 1, 1) for c in widths) \
                if cfg.mouth_map else None
            for layer in [*self.teeth_bias, *(self.teeth_map_conv or [])]:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        if cfg.freeze_encoder:
            self.encoder.requires_grad_(False)

    def grown_state(self, old: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """This generator's state dict with the trained weights ``old`` of a narrower decoder in it.

        For a wider decoder (``decoder_channels`` and ``output_channels`` at least as large at every
        scale) grown from trained weights (``lipsync.train --init --set``): each old weight goes to
        its old channels, the new channels keep this model's fresh initialisation on their way in,
        and everything reading a new channel starts at zero for it.  The grown generator therefore
        computes exactly what the trained one did (in eval mode) and its new channels start
        learning from there, as Net2Net-style widening does.  Written by hand because the decoder's
        first convolution at each scale reads ``cat([features, input, audio])``: the new feature
        channels go between the old ones and the concatenated input, which a plain copy of the old
        tensor into the top-left corner would misplace.

        Raises ValueError naming a weight that does not fit (a narrower or otherwise different
        layer).
        """
        fresh = self.state_dict()
        extra = self.extra_channels
        tails = {"output_block.0.": extra, "refine.0.": extra, "warp.0.": extra, "warp_draw.0.": extra + 3}
        tails.update({f"decoder_blocks.{i}.0.": extra for i in range(len(self.decoder_blocks))})
        out = {}
        for key, new in fresh.items():
            if key not in old:
                out[key] = new
                continue
            was = old[key]
            if was.shape == new.shape:
                out[key] = was
                continue
            if was.ndim != new.ndim or any(a > b for a, b in zip(was.shape, new.shape)) or (
                    was.ndim > 2 and was.shape[2:] != new.shape[2:]):
                raise ValueError(f"{key}: trained {tuple(was.shape)} does not fit in {tuple(new.shape)}; "
                                 "channels can only be added")
            tail = next((t for prefix, t in tails.items() if key.startswith(prefix)), 0)
            grown = new.clone()  # new output channels keep their fresh weights and biases
            n = was.shape[0]
            if was.ndim >= 2:  # a weight (out, in, ...): old outputs read the new inputs with zero
                head, width = was.shape[1] - tail, new.shape[1]
                grown[:n, :head] = was[:, :head]
                grown[:n, head: width - tail] = 0
                grown[:n, width - tail:] = was[:, head:]
            else:  # biases and BatchNorm vectors
                grown[:n] = was
            out[key] = grown
        return out

    @property
    def weights_colour(self) -> str:
        """Always ``"rgb"``: MARLIN and this generator work in RGB."""
        return self.config.colour

    def train(self, mode: bool = True) -> MarlinLipGenerator:
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.config.freeze_encoder:
            self.encoder.eval()
        return self

    def load_marlin(self, source: object) -> None:
        """Copy MARLIN encoder weights (a ``Marlin``, a state dict or a path); see
        :func:`lipsync.models.marlin_encoder.load_marlin_weights`."""
        load_marlin_weights(self.encoder, source)

    def encode(self, faces: Tensor, rest: Tensor | None = None) -> Tensor:
        """Encoder tokens for the windows of ``faces``.

        Parameters
        ----------
        faces:
            The generator's ``faces`` input, ``(B, 6, T, S, S)`` or ``(B*T, 6, S, S)`` RGB in
            [0, 1], ``T`` a multiple of 16.

        Returns
        -------
        Tensor
            ``(B*T/16, N, E)`` tokens, windows in order (clip outermost); no gradient when the
            encoder is frozen.
        """
        x, _ = fold_faces(faces, self.img_size, self.frames_per_window)
        return self._encode_folded(self._mask_reference(x, rest))

    def _mask_reference(self, x: Tensor, rest: Tensor | None = None) -> Tensor:
        box = self.config.reference_mask
        if box is None:
            return x
        per = self.frames_per_window
        if self.config.reference_fill == "rest":
            if rest is None or rest.shape != (x.shape[0] // per,):
                got = None if rest is None else tuple(rest.shape)
                raise ValueError(f"reference_fill='rest' needs rest: ({x.shape[0] // per},) indices of each "
                                 f"window's most closed mouth (lipsync.models.rest_frames), got {got}")
            if rest.numel() and not 0 <= int(rest.min()) <= int(rest.max()) < per:
                raise ValueError(f"rest indices must lie in 0 .. {per - 1}")
        s = x.shape[-1]
        x1, y1, x2, y2 = (round(v * s) for v in box)
        x = x.clone()
        fill = self.config.reference_fill
        if fill == "zero":
            x[:, 3:6, y1:y2, x1:x2] = 0.0
        elif fill == "edges":
            x[:, 3:6, y1:y2, x1:x2] = edge_fill(x[:, 3:6], (x1, y1, x2, y2))
        else:  # "mean" / "rest": x holds whole windows of frames_per_window consecutive frames
            box = x[:, 3:6, y1:y2, x1:x2]
            windows = box.reshape(-1, per, *box.shape[1:])
            if fill == "mean":
                shown = windows.mean(1, keepdim=True)
            else:
                shown = windows[torch.arange(windows.shape[0], device=x.device), rest.to(x.device)][:, None]
            x[:, 3:6, y1:y2, x1:x2] = shown.expand(-1, per, *box.shape[1:]).reshape(box.shape)
        return x

    def _encode_folded(self, x: Tensor) -> Tensor:
        n, _, s, _ = x.shape
        chans = slice(3, 6) if self.config.encoder_frames == "reference" else slice(0, 3)
        per = self.frames_per_window
        clip = x[:, chans].reshape(n // per, per, 3, s, s).transpose(1, 2)  # (W, 3, 16, S, S)
        clip = resize_clip(clip, self.marlin_config.img_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            return self.encoder.extract_features(clip.to(self.encoder.norm.weight.dtype), keep_seq=True)

    def forward(self, faces: Tensor, mels: Tensor, tokens: Tensor | None = None,
                frames: Tensor | None = None, rest: Tensor | None = None,
                mouth_shape: Tensor | None = None, reference_opening: Tensor | None = None,
                mouth_geometry: Tensor | None = None, mouth_teeth: Tensor | None = None) -> Tensor:
        """Generate faces for whole 16-frame windows.

        Parameters
        ----------
        faces:
            ``(B, 6, T, S, S)`` or ``(B*T, 6, S, S)`` float RGB in [0, 1], ``S = img_size``,
            ``T`` a multiple of 16: channels 0-2 target with rows ``S//2:`` zeroed, 3-5 reference.
        mels:
            ``(B, T, 1, 80, 16)`` or ``(B*T, 1, 80, 16)`` float in [-4, 4], one window per frame.
        tokens:
            Optional precomputed :meth:`encode` output ``(B*T/16, N, E)``; skips the encoder.
        frames:
            Optional ``(B, K)`` long indices into ``T`` (5-D input only): decode only these frames
            of each sample.  The encoder still sees whole windows and each frame is decoded
            independently, so in eval mode the result equals the same frames of the full output
            (in train mode BatchNorm takes its statistics from the decoded frames only) at a
            fraction of the cost; training uses it to spend its time on more windows.
        rest:
            ``(B*T/16,)`` long, with ``reference_fill="rest"`` only (required then): which frame of
            each reference window has the most closed mouth (:func:`rest_frames`).
        mouth_shape:
            ``(B, T, 2)`` or ``(B*T, 2)`` float, with ``mouth_input`` only: the measured (opening,
            width) of each target frame (:func:`lipsync.data.sync_measure.mouth_opening`,
            ``mouth_width``), as training gives it; rows with a NaN, and all rows when None (as at
            inference), use what ``mouth_head`` predicts from the frame's audio.
        reference_opening:
            ``(B, T)`` or ``(B*T,)`` float, for ``copy_gate`` and ``mouth_reference`` (ignored
            without them): the measured mouth opening of each reference frame, NaN where unknown
            (no gate there; ``mouth_reference`` then takes the opening the audio asks for).
            Inference passes it (:func:`inference_reference`), training to ``mouth_reference``
            generators (read by the opening reader); the gate acts in eval mode only.
        mouth_geometry:
            ``(B, T, 5)`` or ``(B*T, 5)`` float, for ``mouth_map`` (ignored without it): where each
            frame's mouth is (``lipsync.data.sync_measure.mouth_geometry`` of its face-mesh landmarks
            in face-crop pixels), NaN where unknown (no ellipses there); None: no ellipses at all.
        mouth_teeth:
            ``(B, T)`` or ``(B*T,)`` float, with ``mouth_teeth`` only: how much tooth each target
            frame shows (:func:`lipsync.data.sync_measure.mouth_teeth`), as training gives it; NaN
            rows, and all rows when None (as at inference), use what ``teeth_head`` predicts.

        Returns
        -------
        Tensor
            ``(B, 3, T, S, S)`` or ``(B*T, 3, S, S)`` (the rank of ``faces``), RGB in [0, 1];
            ``(B, 3, K, S, S)`` with ``frames``.
        """
        x, m, t = fold_generator_inputs(faces, mels, self.img_size, self.frames_per_window)
        if mouth_shape is not None:
            if not self.config.mouth_input:
                raise ValueError("mouth_shape is for generators with mouth_input=True")
            mouth_shape = mouth_shape.reshape(-1, 2)
            if mouth_shape.shape[0] != x.shape[0]:
                raise ValueError(f"mouth_shape must be (B, T, 2) or (B*T, 2), one (opening, width) per "
                                 f"frame of faces, got {tuple(mouth_shape.shape)}")
        own = None  # each decoded frame's reference opening, where the config uses it
        if takes_reference_opening(self) and reference_opening is not None:
            own = reference_opening.reshape(-1)
            if own.shape[0] != x.shape[0]:
                raise ValueError(f"reference_opening must be (B, T) or (B*T,), one opening per frame of "
                                 f"faces, got {tuple(reference_opening.shape)}")
        teeth = None
        if mouth_teeth is not None:
            if not self.config.mouth_teeth:
                raise ValueError("mouth_teeth is for generators with mouth_teeth=True")
            teeth = mouth_teeth.reshape(-1)
            if teeth.shape[0] != x.shape[0]:
                raise ValueError(f"mouth_teeth must be (B, T) or (B*T,), one value per frame of faces, "
                                 f"got {tuple(mouth_teeth.shape)}")
        geometry = None
        if self.config.mouth_map and mouth_geometry is not None:
            geometry = mouth_geometry.reshape(-1, 5)
            if geometry.shape[0] != x.shape[0]:
                raise ValueError(f"mouth_geometry must be (B, T, 5) or (B*T, 5), one row per frame of "
                                 f"faces, got {tuple(mouth_geometry.shape)}")
        x = self._mask_reference(x, rest)
        if tokens is None:
            tokens = self._encode_folded(x)
        elif tokens.shape[0] * self.frames_per_window != x.shape[0]:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not match {x.shape[0]} frames "
                             f"({self.frames_per_window} per window)")
        maps = tokens_to_frame_maps(tokens, self.marlin_config).to(x.dtype)  # (N, E/2, g, g)
        if frames is not None:
            if t is None or frames.ndim != 2 or frames.shape[0] * t != x.shape[0]:
                raise ValueError(f"frames must be (B, K) indices for 5-D faces {tuple(faces.shape)}, "
                                 f"got {tuple(frames.shape)}")
            if frames.numel() and not 0 <= int(frames.min()) <= int(frames.max()) < t:
                raise ValueError(f"frames must index the {t} frames of each sample")
            rows = (frames + t * torch.arange(frames.shape[0], device=frames.device)[:, None]).flatten()
            x, m, maps, t = x[rows], m[rows], maps[rows], frames.shape[1]
            if mouth_shape is not None:
                mouth_shape = mouth_shape[rows.to(mouth_shape.device)]
            if own is not None:
                own = own[rows.to(own.device)]
            if geometry is not None:
                geometry = geometry[rows.to(geometry.device)]
            if teeth is not None:
                teeth = teeth[rows.to(teeth.device)]
        embedding = self.audio_encoder(m)
        audio = self.audio_proj(embedding)  # (N, E/2, 1, 1)
        skip = self.audio_skip_proj(embedding) if self.config.audio_skip else None  # (N, k, 1, 1)
        biases, said = self._mouth_biases(embedding, mouth_shape, own, geometry, teeth)
        h = torch.cat([maps, audio.expand(-1, -1, *maps.shape[-2:])], dim=1)  # (N, E, g, g)
        flow = None
        for i, (size, block) in enumerate(zip(self.scales, self.decoder_blocks)):
            h = F.interpolate(h, size=(size, size), mode="bilinear", align_corners=False) \
                if h.shape[-1] != size else h
            if biases:
                h = h + biases[i]
            extra = _extra(x, skip, size)
            h = block(torch.cat([h, *extra], dim=1))
            if self.config.warp and i == self.warp_block:
                flow = WARP_GAIN * self.warp(torch.cat([h, *extra], dim=1))
        if biases:
            h = h + biases[-1]
        z = torch.cat([h, *_extra(x, skip, x.shape[-1])], dim=1)
        features = self.output_block[0](z)
        moved = None if flow is None else self.warp_sampler(x[:, 3:6], flow)
        if self.config.warp_draw:
            features = features + self.warp_draw(torch.cat([z, moved.to(z.dtype)], dim=1))
        logits = self.output_block[1](features)
        if self.config.refine_channels:
            logits = logits + self.refine(z)
        out = self.output_block[2](logits)
        if self.config.composite:
            logit = COMPOSITE_GAIN * self.composite(features) + self.config.copy_bias
            if own is not None and self.config.copy_gate and not self.training:
                logit = logit + self._copy_gate(said, own).to(logit.dtype)[:, None, None, None]
            a = torch.sigmoid(logit)
            reference = x[:, 3:6] if moved is None else moved
            out = out + a * (reference.to(out.dtype) - out)
        return unfold_frames(out, t)

    def _mouth_biases(self, embedding: Tensor, mouth_shape: Tensor | None,
                      own: Tensor | None = None,
                      geometry: Tensor | None = None,
                      teeth: Tensor | None = None) -> tuple[list[Tensor], Tensor | None]:
        """Per-block ``(N, C, 1, 1)`` biases from the mouth shape (``mouth_input``) and, with
        ``mouth_reference``, the reference's own opening ``own`` (``(N,)``, NaN where unknown), else
        []; with ``mouth_map``, ``(N, C, s, s)`` at each block's size ``s`` (the biases plus the
        convolved ellipses of :func:`mouth_ellipses`, drawn where ``geometry`` places them); and the
        ``(N,)`` opening the shape stands for in opening units (the head's, before ``mouth_gain``,
        or the given one), else None; ``mouth_shape`` is ``(N, 2)``, one row per decoded frame.
        With ``mouth_teeth``, the teeth (``teeth`` ``(N,)`` measured, NaN or None: ``teeth_head``'s)
        add a bias of their own and, with ``mouth_map``, a map: the told gap's ellipse scaled by
        them (``teeth_map``)."""
        if not self.config.mouth_input:
            return [], None
        shape = self.mouth_head(embedding.flatten(1))  # (N, 2) standardised (opening, width)
        said = shape[:, 0]
        if self.config.mouth_gain != 1.0:
            shape = torch.cat([shape[:, :1] * self.config.mouth_gain, shape[:, 1:]], dim=1)
        if mouth_shape is not None:
            given = mouth_shape_units(mouth_shape.to(shape.device).float()).to(shape.dtype)
            shape = torch.where(torch.isfinite(given), given, shape)
            said = torch.where(torch.isfinite(given[:, 0]), given[:, 0], said)
        biases = [MOUTH_BIAS_GAIN * bias(shape)[:, :, None, None] for bias in self.mouth_bias]
        if self.config.mouth_reference:  # standardised as the opening is; unknown: what is said
            mine = said.float() if own is None else opening_units(own.to(said.device).float())
            mine = torch.where(torch.isfinite(mine), mine, said.float()).to(shape.dtype)[:, None]
            biases = [b + MOUTH_BIAS_GAIN * r(mine)[:, :, None, None]
                      for b, r in zip(biases, self.reference_bias)]
        if self.config.mouth_teeth:
            shown = self.teeth_head(embedding.flatten(1))[:, 0]  # standardised
            if teeth is not None:
                given = teeth_units(teeth.to(shown.device).float()).to(shown.dtype)
                shown = torch.where(torch.isfinite(given), given, shown)
            biases = [b + MOUTH_BIAS_GAIN * t(shown[:, None])[:, :, None, None]
                      for b, t in zip(biases, self.teeth_bias)]
        if self.config.mouth_map and geometry is not None:
            told = mouth_shape_units(shape.float(), inverse=True)  # measured units
            theirs = told[:, 0] if own is None else own.to(told.device).float()
            theirs = torch.where(torch.isfinite(theirs), theirs, told[:, 0])
            geometry = geometry.to(told.device).float()
            sizes = [*self.scales, self.img_size]  # the last block and the output block share a size
            drawn = {size: mouth_ellipses(geometry, told, theirs, size) for size in set(sizes)}
            biases = [b + MOUTH_BIAS_GAIN * conv(drawn[size].to(b.dtype))
                      for b, conv, size in zip(biases, self.mouth_map_conv, sizes)]
            if self.config.mouth_teeth:
                amount = teeth_map(teeth_units(shown.float(), inverse=True))[:, None, None, None]
                biases = [b + MOUTH_BIAS_GAIN * conv((drawn[size][:, :1] * amount).to(b.dtype))
                          for b, conv, size in zip(biases, self.teeth_map_conv, sizes)]
        said = opening_units(said.float(), inverse=True)
        return biases, said

    def _copy_gate(self, said: Tensor, own: Tensor) -> Tensor:
        """``(N,)`` logit bias of ``copy_gate``: large where the frame's own opening ``own`` is
        near the ``said`` one, 0 where ``own`` is NaN."""
        gap = (said - own.to(said.device).float()) / self.config.copy_gate_width
        gate = self.config.copy_gate * torch.exp(-gap.square())
        return torch.nan_to_num(gate, nan=0.0)


#: typical (opening, width) of a face (face-mesh measures relative to the eye-corner distance) and
#: their spread: the scale ``mouth_head`` predicts in (measured on the synthetic training set; real
#: faces' are of the same order)
MOUTH_SHAPE_MEAN = (0.08, 0.62)
MOUTH_SHAPE_STD = (0.05, 0.07)


def mouth_shape_units(shape: Tensor, inverse: bool = False) -> Tensor:
    """Measured ``(..., 2)`` (opening, width) -> the standardised scale ``mouth_head`` predicts
    (``inverse``: back to measured)."""
    mean = torch.tensor(MOUTH_SHAPE_MEAN, device=shape.device, dtype=shape.dtype)
    std = torch.tensor(MOUTH_SHAPE_STD, device=shape.device, dtype=shape.dtype)
    return shape * std + mean if inverse else (shape - mean) / std


def opening_units(opening: Tensor, inverse: bool = False) -> Tensor:
    """The opening alone: measured -> the standardised scale of ``mouth_shape_units``' first column
    (``inverse``: back to measured)."""
    if inverse:
        return opening * MOUTH_SHAPE_STD[0] + MOUTH_SHAPE_MEAN[0]
    return (opening - MOUTH_SHAPE_MEAN[0]) / MOUTH_SHAPE_STD[0]


#: typical tooth area showing (``lipsync.data.sync_measure.mouth_teeth``) and its spread: the scale
#: ``teeth_head`` predicts in (measured on the synthetic training set); and the area that fills the
#: teeth map (about the 95th percentile there: a wide open mouth's upper teeth)
TEETH_MEAN, TEETH_STD, TEETH_FULL = 0.004, 0.005, 0.015


def teeth_units(teeth: Tensor, inverse: bool = False) -> Tensor:
    """Measured tooth area -> the standardised scale ``teeth_head`` predicts (``inverse``: back)."""
    return teeth * TEETH_STD + TEETH_MEAN if inverse else (teeth - TEETH_MEAN) / TEETH_STD


def teeth_map(teeth: Tensor) -> Tensor:
    """Measured tooth area -> the weight of the told gap's ellipse in the teeth map, in [0, 1]."""
    return (teeth / TEETH_FULL).clamp(0.0, 1.0)


#: how far down from the mouth corners' midpoint the lip gap's centre sits, as a share of the gap:
#: the lower lip and jaw make most of an opening (0.72 of it in the synthetic renderer), so the
#: gap's centre drops by about 0.2 of it
GAP_DROP = 0.22
#: the lip gap's half width, as a share of the corner-to-corner distance
GAP_HALF_WIDTH = 0.45


def mouth_ellipses(geometry: Tensor, told: Tensor, own: Tensor, size: int) -> Tensor:
    """The two soft lip-gap ellipses a ``mouth_map`` generator is shown, at ``size`` x ``size``.

    Channel 0 is the gap the shape ``told`` asks for (its opening and width), channel 1 the
    reference frame's own gap (opening ``own``, the told width).  Each is ``1 - r`` clipped at 0,
    ``r`` the elliptical radius about the gap's centre (``GAP_DROP`` of the gap below the corners'
    midpoint, across the corner line), the semi-axes ``GAP_HALF_WIDTH`` of the corner distance and
    half the gap, each widened by a pixel so a closed mouth is a thin line rather than nothing.
    Written by hand: a few broadcast tensor ops, batched, on the model's device (a drawing library
    would rasterise one frame at a time on the CPU).

    Parameters
    ----------
    geometry : (N, 5) ``lipsync.data.sync_measure.mouth_geometry`` rows; rows with a NaN draw nothing (zeros).
    told : (N, 2) measured (opening, width) (``lipsync.data.sync_measure`` units).
    own : (N,) measured opening.

    Returns
    -------
    (N, 2, size, size) float32 in [0, 1].
    """
    g = geometry.float()
    cx, cy, ux, uy, e = (g[:, k, None, None] for k in range(5))
    pixel = 1.0 / size
    grid = (torch.arange(size, device=g.device, dtype=torch.float32) + 0.5) / size
    ys, xs = grid[:, None], grid[None, :]
    half = (GAP_HALF_WIDTH * told[:, 1].float().clamp(min=0))[:, None, None] * e
    maps = []
    for opening in (told[:, 0].float(), own.float()):
        gap = opening.clamp(min=0)[:, None, None] * e
        dx = xs - (cx - uy * GAP_DROP * gap)  # the normal to the corner line, pointing down: (-uy, ux)
        dy = ys - (cy + ux * GAP_DROP * gap)
        along = dx * ux + dy * uy
        across = -dx * uy + dy * ux
        r = torch.sqrt((along.square() / (half.square() + pixel**2))
                       + across.square() / ((gap / 2).square() + pixel**2))
        maps.append((1 - r).clamp(min=0))
    out = torch.stack(maps, dim=1)
    return torch.nan_to_num(out, nan=0.0)


def _extra(x: Tensor, skip: Tensor | None, size: int) -> list[Tensor]:
    """What every decoder scale gets besides the previous block's output."""
    resized = _resized(x, size)
    return [resized] if skip is None else [resized, skip.to(resized.dtype).expand(-1, -1, size, size)]


def _resized(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size:
        return x
    # antialiased resizing has no bf16/fp16 CPU kernel: resize the small 6-channel input in fp32
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y.to(x.dtype)
