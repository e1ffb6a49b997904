"""Training loop of the lip-sync generators (``Wav2Lip``, ``MarlinLipGenerator``), with GAN.

Recipe (REFERENCE.md 2)::

    loss = sync_wt * sync + disc_wt * adv + (1 - sync_wt - disc_wt) * L1

- L1 between generated and true frames (whole faces), plus ``mouth_wt`` times the L1 inside the
  lips' region (``mouth`` of the dataset; 0 by default as in Wav2Lip).  The lips cover a few
  percent of the face, so plain L1 learns the face long before the mouth; weighting them makes
  the audio matter to the loss early;
- opening (``opening_wt``, 0 by default): an auxiliary read-out.  A linear head (training only, not
  part of the saved generator) predicts each target frame's mouth opening (measured from the
  stored landmarks) from the generator's own audio embedding, MSE on 10x the opening.  The L1
  loss reaches the audio encoder only through the whole decoder, and in short runs it learns to
  draw the face long before it finds the audio; the read-out makes the audio embedding carry
  the opening from the first steps, after which the decoder learns to use it.  A generator with
  ``mouth_input`` has a head of its own (``mouth_head``, saved with it, as inference uses it):
  the term then trains that head on the standardised opening and mouth width, and the decoder is
  given the measured shape of each target frame in its place (the val figures use the head's);
  with ``mouth_teeth`` the same goes for ``teeth_head`` and the tooth area each target frame
  shows (``teeth`` of the dataset), a second term of the same weight.  With ``told_shape="head"``
  the decoder is given the heads' predictions instead, as at inference (the heads still learn
  the measured values);
- read (``reader_wt``, with ``reader``): MSE between 10x the opening a frozen
  :class:`lipsync.models.OpeningReader` reads in each generated lower half and 10x the target
  frame's measured opening.  L1 lets a generator that is unsure how far the mouth opens draw
  the average, a blurry half-open mouth; this term asks for the visible opening itself;
- warp (``warp_wt``, generators with ``warp``): L1 inside the lips' region between the warped
  reference (before the composite mixes it in) and the target, averaged over three blurs of
  both (3, 7 and 11 px boxes; see :func:`warp_loss`).  The flow otherwise learns only where
  the composite already copies the reference, and a composite that learned to draw the lips
  copies none of them; this term teaches the flow to move the reference's lips to the target's
  on its own, after which copying them pays;
- edge (``edge_wt``, 0 by default): L1 between the horizontal and vertical pixel differences of the
  generated and true frames inside the lips' region (a gradient-difference loss, as video
  prediction uses against blur).  A mouth drawn soft has the right mean colours but weak
  differences across the lips' edges, which plain L1 barely charges for; this term charges the
  missing edges directly;
- change (``change_wt``, 0 by default): L1 on the pixels where the target differs from the
  reference by more than ``CHANGE_LEVEL`` (the mean over RGB), averaged over those pixels alone.
  With references that show the right face (``reference="counterfactual"``, as inference does),
  those are the pixels the audio has to redraw, the open mouth's gap, teeth and moved lips: about
  2% of the face and an eighth of the lips' region (synthetic clips), so L1 and the lips' L1 let a
  generator that copies its reference's closed mouth where it is unsure lose little for it;
  this term charges the redraw at its own scale;
- sync: BCE of the frozen expert's in-sync probability for the generated lower halves against 1;
  ``sync_wt`` starts at 0 and switches to ``sync_wt`` (0.03) once the eval sync loss falls below
  ``sync_threshold`` (0.75) -- or from the start with ``sync_from_start``;
- adv: the quality discriminator's BCE(D(G), 1), ``disc_wt`` 0.07 (0 turns the GAN off); the
  discriminator trains on BCE(D(real), 1) + BCE(D(fake), 0).  Both on its logits: on clamped
  probabilities a discriminator that saturates (sure that every frame is real) gets no gradient
  and stays so, and the GAN term silently stops (it happened here in a 2000-step CPU run);
- Adam lr 1e-4, betas (0.5, 0.999) with the GAN, no schedule.

Evaluation on the val split every ``eval_every`` steps: ``val/l1``, ``val/psnr``, ``val/ssim``,
``val/sync``; a PNG grid (and, with ``sample_video``, an mp4 of a val clip dubbed with its own
audio as inference does it) every ``sample_every`` steps under ``OUT/samples/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from lipsync.checkpoints import CheckpointError, load
from lipsync.checkpoints import save as save_weights
from lipsync.data.datasets import LipSyncDataset, fixed_keys
from lipsync.models import (
    GENERATORS,
    MarlinLipGenerator,
    MarlinSyncNet,
    OpeningReader,
    QualityDisc,
    SyncNetColor,
    create_model,
)
from lipsync.models.marlin_generator import mouth_shape_units, needs_rest, teeth_units, warp_image
from marlin.training import (
    MetricLogger,
    ResumableBatchSampler,
    TrainingError,
    broadcast_module,
    check_finite,
    load_training_state,
    make_accelerator,
    make_loader,
    progress,
    save_training_state,
    seed_everything,
    sync_gradients,
)

from .common import (
    IntervalMeans,
    bce,
    build_model,
    due,
    lower_half,
    run_meta,
    save_png,
    set_lr,
    train_val_datasets,
    trainable,
    write_sample_video,
)
from .generator_eval import (
    disc_input,
    evaluate_generator,
    expert_similarity,
    extra_inputs,
    render_clip,
    sample_grid,
)

log = logging.getLogger(__name__)

__all__ = ["GeneratorTrainConfig", "train_generator"]


#: what a mouth_input generator's decoder is told in training: each target frame's measured shape
#: (and teeth), or what its heads predict from the audio, as inference tells it
TOLD_SHAPES = ("measured", "head")


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Everything one generator training run needs (built by ``python -m lipsync.train``)."""

    data: Path  # preprocessed data folder
    out: Path  # run folder
    model: str = "wav2lip"  # registry name (lipsync.models.MODELS), ignored with init
    overrides: tuple[tuple[str, object], ...] = ()  # config fields changed from the registry entry
    init: Path | None = None  # fine-tune from this generator checkpoint (new speaker)
    marlin_checkpoint: Path | None = None  # MARLIN encoder weights for a MARLIN generator
    expert: Path | None = None  # frozen sync expert checkpoint (no sync loss without one)
    reader: Path | None = None  # frozen mouth-opening reader checkpoint (no read loss without one)
    reader_wt: float = 1.0  # weight of the read loss (with reader)
    disc_init: Path | None = None  # quality discriminator weights to start from
    disc_model: str = "quality_disc"  # registry name of the discriminator (when not from disc_init)
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-4
    disc_lr: float = 1e-4
    mouth_wt: float = 0.0  # extra weight of the L1 inside the lips' region
    opening_wt: float = 0.0  # weight of the auxiliary mouth-opening read-out of the audio embedding
    warp_wt: float = 0.0  # weight of the L1 of the warped reference in the lips' region (warp generators)
    edge_wt: float = 0.0  # weight of the L1 of the pixel differences (edges) in the lips' region
    change_wt: float = 0.0  # weight of the L1 where the target differs from the reference (change_loss)
    # where each sample's reference window comes from (LipSyncDataset ``reference``): "window" (another
    # window of the clip) or "counterfactual" (the same frames with a mouth speaking other speech)
    reference: str = "window"
    told_shape: str = "measured"  # mouth_input: what the decoder is told in training (TOLD_SHAPES)
    train_frames: int = 0  # MARLIN generators: decoded run of frames per window (0: all)
    sync_wt: float = 0.03
    sync_threshold: float = 0.75
    sync_from_start: bool = False
    disc_wt: float = 0.07
    val_fraction: float = 0.1
    val_samples: int = 64
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 10
    sample_every: int = 500
    sample_video: bool = True
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    cpu: bool = False
    mixed_precision: str = "auto"


def _load_expert(cfg: GeneratorTrainConfig, frames: int, device: torch.device) -> torch.nn.Module | None:
    if cfg.expert is None:
        if cfg.sync_wt > 0:
            log.warning("no --expert: training without the sync loss (L1%s only)",
                        " + GAN" if cfg.disc_wt else "")
        return None
    try:
        expert = load(cfg.expert, kind=("syncnet_color", "marlin_sync")).model
    except CheckpointError as e:
        raise TrainingError(str(e)) from e
    if isinstance(expert, MarlinSyncNet) and frames != expert.n_frames:
        raise TrainingError(f"--expert {cfg.expert}: a {expert.n_frames}-frame MARLIN expert needs a "
                            f"{expert.n_frames}-frame generator, this one takes {frames}-frame samples")
    return expert.to(device).eval().requires_grad_(False)


class OpeningHead(torch.nn.Module):
    """Training-only linear read-out of the mouth opening from a generator's audio embedding."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(generator.audio_encoder[-1].conv_block[0].out_channels, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(N, C, 1, 1)`` audio embeddings -> ``(N,)`` predicted 10x openings."""
        return self.linear(embedding.flatten(1)).squeeze(1)


#: box blurs (px) of the warp loss: sharp lips give the flow a gradient only within a pixel of
#: their edges, and one that shrinks misplaced lips rather than moving them; blurred ones point
#: the flow at lips as far away as they move between closed and open (the output's own L1 keeps
#: the copied lips sharp)
WARP_BLURS = (3, 7, 11)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute RGB difference inside ``mask`` (one channel, broadcast over the three)."""
    return ((pred - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1.0)


def edge_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical neighbour differences of ``pred`` and ``target``
    inside ``mask`` (a pair counts where either of its pixels is in it), the mean of both
    directions.  ``pred``, ``target``: ``(..., 3, H, W)`` or ``(B, 3, K, H, W)`` with ``mask``
    ``(B, 1, K, H, W)``; differences are taken over the last two axes."""
    total = pred.new_zeros(())
    for dim in (-1, -2):
        n = pred.shape[dim] - 1
        dp, dt = pred.diff(dim=dim), target.diff(dim=dim)
        m = torch.maximum(mask.narrow(dim, 0, n), mask.narrow(dim, 1, n))
        total = total + masked_l1(dp, dt, m)
    return total / 2


#: a target pixel counts as changed from the reference (``change_loss``) above this mean absolute
#: RGB difference, [0, 1] scale: about 20 8-bit levels, well above the few levels video coding
#: and re-rendering leave between the two where the face is the same
CHANGE_LEVEL = 0.08


def change_loss(pred: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute RGB difference between ``pred`` and ``target`` over the pixels where
    ``target`` differs from ``reference`` by more than ``CHANGE_LEVEL`` (0 where none does).
    All three ``(B, 3, K, H, W)``; the colour axis is 1."""
    changed = ((target - reference).abs().mean(dim=1, keepdim=True) > CHANGE_LEVEL).float()
    return masked_l1(pred, target, changed)


def warp_loss(reference: torch.Tensor, flow: torch.Tensor, target: torch.Tensor,
              mouth: torch.Tensor, blurs: tuple[int, ...] = WARP_BLURS) -> torch.Tensor:
    """L1 between the warped ``reference`` and ``target`` inside ``mouth``, averaged over blurs.

    At each box size ``k`` the reference is blurred, then warped by ``flow``, and compared with
    the equally blurred target inside the mask dilated by ``k // 2``: warping a blurred image is
    what blurring the warped one would be for a smooth flow, but its gradient with respect to the
    flow reaches ``k / 2`` pixels further (a coarse-to-fine photometric loss, as unsupervised
    optical flow uses, in one step).

    Parameters
    ----------
    reference : (N, 3, S, S) what the generator warps (the masked reference), frames in order.
    flow : (N, 2, h, w) its flow in pixels (:func:`lipsync.models.marlin_generator.warp_image`).
    target, mouth : (B, 3, K, S, S) and (B, 1, K, S, S) with ``B * K == N``.
    """
    target = target.transpose(1, 2).flatten(0, 1).float()
    mouth = mouth.transpose(1, 2).flatten(0, 1).float()
    reference = reference.float()
    total = reference.new_zeros(())
    for k in blurs:
        ref, tgt, mask = reference, target, mouth
        if k > 1:
            ref, tgt = (F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False) for x in (reference, target))
            mask = F.max_pool2d(mouth, k, 1, k // 2)
        moved = warp_image(ref, flow)
        total = total + masked_l1(moved, tgt, mask)
    return total / len(blurs)


def _load_reader(cfg: GeneratorTrainConfig, device: torch.device,
                 needed: bool = False) -> OpeningReader | None:
    """The frozen reader: for the read loss (``reader_wt`` > 0), or where ``needed`` (it reads the
    references' openings for a ``mouth_reference`` generator)."""
    if needed and cfg.reader is None:
        raise TrainingError("a generator with mouth_reference needs --reader: it reads each reference "
                            "frame's mouth opening, as inference measures it from the landmarks")
    if cfg.reader is None or (cfg.reader_wt <= 0 and not needed):
        return None
    try:
        reader = load(cfg.reader, kind="opening_reader").model
    except CheckpointError as e:
        raise TrainingError(str(e)) from e
    return reader.to(device).eval().requires_grad_(False)


def _decoded_frames(cfg: GeneratorTrainConfig, gen: torch.nn.Module, frames: int,
                    expert: torch.nn.Module | None) -> int:
    """Frames of each sample the generator decodes in a training step (``cfg.train_frames``)."""
    if cfg.train_frames <= 0 or cfg.train_frames >= frames:
        return frames
    if not isinstance(gen, MarlinLipGenerator):
        raise TrainingError(f"train_frames applies to MARLIN generators (16-frame windows), "
                            f"not {cfg.model}")
    if isinstance(expert, MarlinSyncNet):
        raise TrainingError(f"train_frames {cfg.train_frames}: the 16-frame MARLIN expert needs "
                            "whole windows")
    if isinstance(expert, SyncNetColor) and cfg.train_frames < expert.n_frames:
        raise TrainingError(f"train_frames {cfg.train_frames}: the expert needs runs of "
                            f"{expert.n_frames} frames")
    return cfg.train_frames


def _load_disc(cfg: GeneratorTrainConfig) -> QualityDisc | None:
    if cfg.disc_wt <= 0:
        return None
    if cfg.disc_init is None:
        disc = create_model(cfg.disc_model)
        if not isinstance(disc, QualityDisc):
            raise TrainingError(f"--disc-model {cfg.disc_model!r} is not a quality discriminator")
        return disc
    try:
        return load(cfg.disc_init, kind="quality_disc").model.train()
    except CheckpointError as e:
        raise TrainingError(str(e)) from e


@torch.no_grad()
def live_fraction(disc: QualityDisc, faces: torch.Tensor) -> float:
    """Share of the discriminator's first-layer units that are positive on these real faces
    ((B*T, 3, 96, 96), as the losses give them).  Near 0 the layer is dead: with LeakyReLU
    every unit passes only ``slope`` of its input and gradient (a hundredth at the release's
    0.01), the discriminator's loss sits at chance and its GAN term gives the generator
    nothing (this happened to the quarter-width discriminator of this project's own runs)."""
    first = disc.face_encoder_blocks[0][0].conv_block[0]
    return (first(disc.judged(faces.float())) > 0).float().mean().item()


def train_generator(cfg: GeneratorTrainConfig) -> dict[str, float]:
    """Train a generator; writes ``OUT/generator.safetensors`` (loads with ``lipsync.infer --checkpoint``),
    ``OUT/disc.safetensors`` with the GAN, ``OUT/state.pt``, ``metrics.csv``, ``tb/``, ``samples/``.

    Returns the last evaluation metrics.
    """
    if not 0 <= cfg.sync_wt + max(cfg.disc_wt, 0) < 1:
        raise TrainingError(f"sync_wt + disc_wt must be in [0, 1), got {cfg.sync_wt} + {cfg.disc_wt}")
    if cfg.told_shape not in TOLD_SHAPES:
        raise TrainingError(f"told_shape {cfg.told_shape!r}: choose {' or '.join(map(repr, TOLD_SHAPES))}")
    acc = make_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
    seed_everything(cfg.seed)
    gen = build_model(cfg.model, dict(cfg.overrides), cfg.init, GENERATORS, cfg.marlin_checkpoint)
    frames = gen.frames_per_window if gen.frames_per_window > 1 else 5
    expert = _load_expert(cfg, frames, acc.device)
    decoded = _decoded_frames(cfg, gen, frames, expert)
    gcfg = getattr(gen, "config", None)
    told = bool(getattr(gcfg, "mouth_reference", False))  # the decoder is told the reference's opening
    reader = _load_reader(cfg, acc.device, needed=told)
    ref_reader = reader if told else None
    disc = _load_disc(cfg)
    if cfg.reference == "window" and getattr(gcfg, "encoder_frames", None) == "reference" \
            and getattr(gcfg, "reference_mask", ()) is None and gcfg.inference_reference == "same":
        log.warning("this generator sees the whole reference, mouth included, and inference shows it the "
                    "frames it dubs: with references from other windows of the clip (--reference window) it "
                    "can learn to copy the visible mouth, and its dubs then follow the original speech. Use "
                    "--reference counterfactual (synthetic clips), or hide the mouth with --set "
                    "reference_mask=[0.25,0.45,0.75,0.85]")
    if cfg.reference == "counterfactual" and needs_rest(gen):
        raise TrainingError("reference_fill='rest' picks the most closed mouth from the reference's measured "
                            "openings, which counterfactual references do not have: use another fill or "
                            "--set reference_mask=null")
    train_ds, val_ds = train_val_datasets(partial(LipSyncDataset, n_frames=frames, size=gen.img_size,
                                                  reference=cfg.reference),
                                          cfg.data, cfg.val_fraction)
    keys = fixed_keys(cfg.val_samples, len(val_ds), cfg.seed)

    betas = (0.5, 0.999) if disc is not None else (0.9, 0.999)
    shaped = bool(getattr(getattr(gen, "config", None), "mouth_input", False))
    tell_measured = cfg.told_shape == "measured"  # else the heads' predictions reach the decoder
    if not tell_measured and not shaped:
        log.warning("--told-shape head changes nothing: this generator has no mouth_input")
    if shaped and cfg.opening_wt <= 0:
        raise TrainingError("a generator with mouth_input needs --opening-wt > 0: it trains the head "
                            "that tells the decoder the mouth's shape at inference")
    head = OpeningHead(gen) if cfg.opening_wt > 0 and not shaped else None
    params = trainable(gen) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=betas)
    ddp, opt = acc.prepare(gen, opt)
    core = acc.unwrap_model(ddp)
    models, opts = {"generator": ddp}, {"generator": opt}
    embedding: list[torch.Tensor] = []  # the audio encoder's output of the latest forward pass only
    warped: list[tuple] = []  # what the latest forward pass warped, and its flow
    if cfg.warp_wt > 0:
        if not getattr(getattr(core, "config", None), "warp", False):
            raise TrainingError("--warp-wt needs a generator with warp "
                                "(--set composite=true --set warp=true)")
        core.warp_sampler.register_forward_hook(lambda _m, args, _o: warped.__setitem__(slice(None), [args]))
    if head is not None:  # small and trained on every process alike: gradients averaged by hand
        head = head.to(acc.device)
        broadcast_module(head, acc)
        models["opening_head"] = head
        # read the embedding the generator computes anyway (one row per decoded frame, clip-major)
        core.audio_encoder.register_forward_hook(
            lambda _m, _i, out: embedding.__setitem__(slice(None), [out]))
    said_shape: list[torch.Tensor] = []  # mouth_head's output of the latest forward pass
    if shaped:
        core.mouth_head.register_forward_hook(lambda _m, _i, out: said_shape.__setitem__(slice(None), [out]))
    toothed = shaped and bool(getattr(core.config, "mouth_teeth", False))
    said_teeth: list[torch.Tensor] = []  # teeth_head's output of the latest forward pass
    if toothed:
        core.teeth_head.register_forward_hook(lambda _m, _i, out: said_teeth.__setitem__(slice(None), [out]))
    if disc is not None:  # kept out of DDP (used in both losses); gradients averaged by hand
        disc = disc.to(acc.device)
        broadcast_module(disc, acc)
        opts["disc"] = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))
        models["disc"] = disc
    state_path = cfg.out / "state.pt"
    start, sync_wt = 0, cfg.sync_wt if cfg.sync_from_start and expert is not None else 0.0
    extra = {}
    if cfg.resume:
        start, extra = load_training_state(state_path, models=models, optimizers=opts, accelerator=acc)
        # the state records whether the sync term had switched on; its weight is this run's
        # --sync-wt, so a resumed run can change it
        if float(extra.get("sync_wt", 0.0)) > 0 and expert is not None:
            sync_wt = cfg.sync_wt
        set_lr(opt, cfg.lr)  # this run's rates, not the saved ones
        if "disc" in opts:
            set_lr(opts["disc"], cfg.disc_lr)
    means = IntervalMeans(acc.device, extra)  # kept in checkpoints for exact resumes
    sampler = ResumableBatchSampler(len(train_ds), cfg.batch_size, seed=cfg.seed, rank=acc.process_index,
                                    world_size=acc.num_processes, start_step=start)
    batches = iter(make_loader(train_ds, sampler, num_workers=cfg.num_workers, seed=cfg.seed))
    logger = MetricLogger(cfg.out, enabled=acc.is_main_process, resume_step=start if cfg.resume else None)
    last: dict[str, float] = {}

    def evaluate(step: int) -> None:
        nonlocal last, sync_wt
        switch = torch.zeros(1, device=acc.device)
        if acc.is_main_process:
            last = evaluate_generator(core, expert, val_ds, keys, cfg.batch_size, acc.device, ref_reader)
            off = sync_wt == 0 and expert is not None and cfg.sync_wt > 0
            if off and last["val/sync"] < cfg.sync_threshold:
                switch += 1
                log.info("step %d: eval sync loss %.3f < %.3f, sync loss on (weight %g)", step,
                         last["val/sync"], cfg.sync_threshold, cfg.sync_wt)
            logger.log(step, {**last, "sync_wt": cfg.sync_wt if switch.item() else sync_wt})
        if acc.reduce(switch, "sum").item() > 0:
            sync_wt = cfg.sync_wt

    def samples(step: int) -> None:
        if not acc.is_main_process:
            return
        grid = sample_grid(core, val_ds, keys[0], acc.device, ref_reader)
        save_png(cfg.out / "samples" / f"step_{step:07d}.png", grid)
        logger.image("samples", step, grid)
        if cfg.sample_video:
            video, audio = render_clip(core, val_ds, keys[0][0], acc.device)
            write_sample_video(cfg.out / "samples" / f"step_{step:07d}.mp4", video, audio)

    def save(step: int) -> None:
        save_training_state(state_path, models=models, optimizers=opts, step=step,
                            extra={"sync_wt": sync_wt, **means.state()},
                            accelerator=acc)
        if acc.is_main_process:
            meta = run_meta(cfg.data, step, model=cfg.model if cfg.init is None else None, init=cfg.init,
                            expert=cfg.expert, frames_per_sample=frames,
                            **{"val_" + k.split("/")[1]: v for k, v in last.items()})
            save_weights(cfg.out / "generator.safetensors", core, meta)
            if disc is not None:
                save_weights(cfg.out / "disc.safetensors", disc, run_meta(cfg.data, step))
        acc.wait_for_everyone()

    if start == 0:
        evaluate(0)
    bar = progress(cfg.steps, start, enabled=acc.is_main_process, desc="train")
    means.start_clock()
    try:
        for step in range(start, cfg.steps):
            batch = next(batches)
            faces, target = batch["faces"].to(acc.device), batch["target"].to(acc.device)
            mels, mouth = batch["mels"].to(acc.device), batch["mouth"].to(acc.device)
            opening = batch["opening"].to(acc.device)
            if step == start and disc is not None and acc.is_main_process:
                live = live_fraction(disc, disc_input(target))
                if live < 0.01:
                    log.warning("the discriminator's first layer is positive on only %.2g%% of real "
                                "faces: it is dead and its GAN term will give almost nothing; start a "
                                "fresh one (no --disc-init; --disc-model quality_disc_lips_tiny)",
                                100 * live)
            inputs = extra_inputs(core, {**batch, "faces": faces}, acc.device, ref_reader)  # faces: on device
            if shaped:  # the head learns each target frame's measured mouth shape; the decoder is told it
                shape = torch.stack([opening, batch["width"].to(acc.device)], dim=-1)
                if tell_measured:
                    inputs["mouth_shape"] = shape
            if toothed:  # and how much tooth shows in it
                teeth = batch["teeth"].to(acc.device)
                if tell_measured:
                    inputs["mouth_teeth"] = teeth
            with acc.autocast():
                if decoded < frames:  # a random run of `decoded` frames of each window
                    first = torch.randint(0, frames - decoded + 1, (faces.shape[0], 1))
                    pick = (first + torch.arange(decoded)).to(acc.device)
                    pred = ddp(faces, mels, frames=pick, **inputs)
                    rows = pick[:, None, :, None, None]
                    target = target.gather(2, rows.expand(-1, 3, -1, *target.shape[-2:]))
                    mouth = mouth.gather(2, rows.expand(-1, 1, -1, *mouth.shape[-2:]))
                    if cfg.change_wt > 0:
                        reference = faces[:, 3:6].gather(2, rows.expand(-1, 3, -1, *target.shape[-2:]))
                    mels = mels.gather(1, pick[:, :, None, None, None].expand(-1, -1, *mels.shape[2:]))
                    opening = opening.gather(1, pick)
                    if shaped:
                        shape = shape.gather(1, pick[..., None].expand(-1, -1, 2))
                    if toothed:
                        teeth = teeth.gather(1, pick)
                else:
                    pred = ddp(faces, mels, **inputs)
                    reference = faces[:, 3:6]
            pred = pred.float()
            l1 = F.l1_loss(pred, target)
            losses = {"l1": l1}
            recon = l1
            if cfg.mouth_wt > 0:
                losses["mouth"] = masked_l1(pred, target, mouth)
                recon = l1 + cfg.mouth_wt * losses["mouth"]
            if cfg.edge_wt > 0:
                losses["edge"] = edge_loss(pred, target, mouth)
                recon = recon + cfg.edge_wt * losses["edge"]
            if cfg.change_wt > 0:
                losses["change"] = change_loss(pred, target, reference.float())
                recon = recon + cfg.change_wt * losses["change"]
            if cfg.warp_wt > 0:
                losses["warp"] = warp_loss(*warped.pop(), target, mouth)
                recon = recon + cfg.warp_wt * losses["warp"]
            opening = opening.flatten()  # one per decoded frame, clip-major
            known = torch.isfinite(opening)  # frames whose clip has face-mesh landmarks
            if head is not None:
                with acc.autocast():
                    said = head(embedding.pop()).float()
                losses["opening"] = F.mse_loss(said[known], 10.0 * opening[known]) \
                    if known.any() else said.sum() * 0.0
                recon = recon + cfg.opening_wt * losses["opening"]
            if shaped:
                true = mouth_shape_units(shape.flatten(0, 1))  # one row per decoded frame, clip-major
                fit, said = torch.isfinite(true), said_shape.pop().float()
                losses["opening"] = F.mse_loss(said[fit], true[fit]) if fit.any() else said.sum() * 0.0
                recon = recon + cfg.opening_wt * losses["opening"]
            if toothed:
                true = teeth_units(teeth.flatten())  # one per decoded frame, clip-major
                fit, said = torch.isfinite(true), said_teeth.pop()[:, 0].float()
                losses["teeth"] = F.mse_loss(said[fit], true[fit]) if fit.any() else said.sum() * 0.0
                recon = recon + cfg.opening_wt * losses["teeth"]
            if reader is not None and cfg.reader_wt > 0:
                with acc.autocast():
                    read = reader(lower_half(pred, reader.face_size).transpose(1, 2).flatten(0, 1)).float()
                losses["read"] = F.mse_loss(10.0 * read[known], 10.0 * opening[known]) \
                    if known.any() else read.sum() * 0.0
                recon = recon + cfg.reader_wt * losses["read"]
            if expert is not None:
                with torch.set_grad_enabled(sync_wt > 0), acc.autocast():
                    sim = expert_similarity(expert, pred, mels, batch["window_mel"].to(acc.device))
                losses["sync"] = bce(sim, 1.0)
            if disc is not None:
                with acc.autocast():
                    losses["adv"] = disc.generator_loss(disc_input(pred))
            disc_wt = cfg.disc_wt if disc is not None else 0.0
            loss = (1.0 - sync_wt - disc_wt) * recon + disc_wt * losses.get("adv", 0.0) + \
                sync_wt * losses.get("sync", 0.0)
            losses["loss"] = loss
            check_finite(losses, step, acc, state_path if state_path.exists() else None)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if head is not None:
                sync_gradients(head, acc)
            opt.step()
            if disc is not None:
                with acc.autocast():
                    losses["disc"] = disc.discriminator_loss(disc_input(target), disc_input(pred))
                check_finite({"disc": losses["disc"]}, step, acc, state_path if state_path.exists() else None)
                opts["disc"].zero_grad(set_to_none=True)
                losses["disc"].backward()
                sync_gradients(disc, acc)
                opts["disc"].step()
            done = step + 1
            bar.update(1)
            means.add(losses, target.shape[0])
            if due(done, cfg.log_every, cfg.steps):
                metrics = means.flush(acc, prefix="train/")
                logger.log(done, metrics)
                bar.set_postfix(l1=f"{metrics['train/l1']:.4f}")
            if due(done, cfg.eval_every, cfg.steps):
                evaluate(done)
            if cfg.sample_every > 0 and due(done, cfg.sample_every, cfg.steps):
                samples(done)
            if due(done, cfg.save_every, cfg.steps):
                save(done)
    finally:
        bar.close()
        logger.close()
    return last
