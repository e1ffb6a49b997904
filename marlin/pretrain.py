"""Pretrain MARLIN on face clips: ``python -m marlin.pretrain --data DIR --variant vit_tiny --out RUN``.

``DIR`` holds preprocessed clips (``marlin.data`` layout, e.g. from ``lipsync.preprocess``) or a
plain folder of face videos (decoded once into ``RUN/clip_cache``).  Recipe (REFERENCE.md 1):
``n_frames`` frames at stride 2 from a random start; MSE between predicted and raw pixel patches
on masked tokens only, plus an optional WGAN critic on the predicted patches; AdamW betas
(0.9, 0.95), lr 1.5e-4 * batch / 256 and min lr 1e-5 * batch / 256 (batch = global batch), a
linear warmup (2% of the run, as 40 of 2000 epochs) then cosine decay over the run.

Writes ``RUN/model.safetensors`` (loads with ``Marlin.from_file``), ``RUN/state.pt`` (resume
with ``--resume``), ``RUN/metrics.csv``, ``RUN/tb/`` and ``RUN/samples/step_*.png`` grids
(rows: input, masked input, reconstruction).  Launch on many GPUs with ``accelerate launch -m
marlin.pretrain ...`` or ``torchrun --nproc_per_node N -m marlin.pretrain ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marlin.config import MarlinConfig, available_models, get_config
from marlin.data import DataError, FaceClipDataset, cache_video_folder, is_clip_root, split_clips
from marlin.masking import MASKING_STRATEGIES, make_mask
from marlin.model import Marlin
from marlin.training import (
    MetricLogger,
    ResumableBatchSampler,
    TrainingError,
    add_run_args,
    atomic_write,
    broadcast_module,
    check_finite,
    load_training_state,
    make_accelerator,
    make_loader,
    progress,
    run_cli,
    save_training_state,
    seed_everything,
    step_generator,
    sync_gradients,
    warmup_cosine,
)

from .cli import HelpFormatter

log = logging.getLogger(__name__)

__all__ = ["PatchCritic", "masked_targets", "critic_loss", "gradient_penalty", "sample_grid", "main"]


class PatchCritic(nn.Module):
    """Per-token WGAN critic on pixel patches: Linear(P, 4D) -> LeakyReLU -> Linear(4D, 1).

    ``forward``: (..., P) float -> (...) unbounded scores (real high, fake low).
    """

    def __init__(self, patch_dim: int, decoder_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(patch_dim, 4 * decoder_dim), nn.LeakyReLU(0.2),
                                    nn.Linear(4 * decoder_dim, 1))

    def forward(self, patches: Tensor) -> Tensor:
        return self.layers(patches).squeeze(-1)


def masked_targets(video: Tensor, mask: Tensor, config: MarlinConfig) -> Tensor:
    """Raw pixel targets of the masked tokens: (B, 3, T, H, W), (B, N) bool -> (B, N_masked, P)."""
    from marlin.model import patchify

    patches = patchify(video, config)
    return patches[~mask].view(video.shape[0], -1, config.patch_dim)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """WGAN-GP term: mean (||grad critic(x_hat)|| - 1)^2 on per-token interpolates x_hat."""
    eps = torch.rand(real.shape[:-1] + (1,), generator=generator).to(real)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.norm(dim=-1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor, gp_weight: float,
                generator: torch.Generator) -> Tensor:
    """Critic objective: mean D(fake) - mean D(real) (+ gp_weight * gradient penalty)."""
    loss = critic(fake).mean() - critic(real).mean()
    if gp_weight > 0:
        loss = loss + gp_weight * gradient_penalty(critic, real, fake, generator)
    return loss


def sample_grid(video: Tensor, mask: Tensor, recon: Tensor, config: MarlinConfig,
                max_frames: int = 8) -> np.ndarray:
    """One clip as an image: rows input / masked input (hidden patches grey) / reconstruction.

    ``video``, ``recon``: (3, T, H, W) float in [0, 1]; ``mask``: (N,) bool.  Returns
    (3 * H, k * W, 3) uint8 with ``k = min(T, max_frames)`` evenly spaced frames.
    """
    from marlin.model import patchify, unpatchify

    video, mask, recon = video.detach().float().cpu(), mask.cpu(), recon.detach().float().cpu()
    patches = patchify(video[None], config)
    patches[0, ~mask] = 0.5
    masked = unpatchify(patches, config)[0]
    frames = np.linspace(0, video.shape[1] - 1, min(video.shape[1], max_frames)).round().astype(int)
    rows = [torch.cat(list(v[:, frames].permute(1, 2, 3, 0)), dim=1) for v in (video, masked, recon)]
    return (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().byte().cpu().numpy()


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m marlin.pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="preprocessed clip folder or folder of face videos")
    p.add_argument("--variant", choices=available_models(), default="vit_tiny", help="model size")
    p.add_argument("--n-frames", type=int, default=None, help="frames per clip (default: the variant's)")
    p.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the variant's)")
    p.add_argument("--frame-stride", type=int, default=2, help="take every k-th frame of the source clip")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (any file Marlin.from_file reads)")
    p.add_argument("--masking", choices=MASKING_STRATEGIES, default=None,
                   help="masking strategy (default: fasking when every clip has regions.npy, else tube)")
    p.add_argument("--mask-ratio", type=float, default=None, help="fraction of tokens hidden (default 0.9)")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default 1.5e-4 * global batch / 256)")
    p.add_argument("--min-lr", type=float, default=None, help="final lr (default 1e-5 * global batch / 256)")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warmup steps (default 2%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    p.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0: off)")
    p.add_argument("--adv-weight", type=float, default=0.01, help="weight of the critic term (0: plain MSE)")
    p.add_argument("--critic-steps", type=int, default=1, help="critic updates per generator step")
    p.add_argument("--gp-weight", type=float, default=0.0, help="critic gradient-penalty weight (release: 0)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="identity share for val (no val.txt)")
    p.add_argument("--val-clips", type=int, default=16, help="val clips scored at each checkpoint")
    p.add_argument("--sample-every", type=int, default=500, help="steps between PNG grids (0: never)")
    add_run_args(p, steps=10000, batch_size=8, save_every=500, log_every=10)
    return p


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "frame_stride", "critic_steps", "log_every", "save_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if not a.data.exists():
        p.error(f"--data {a.data}: no such folder")
    if a.init is not None and not a.init.exists():
        p.error(f"--init {a.init}: no such file")
    if a.mask_ratio is not None and not 0 <= a.mask_ratio < 1:
        p.error(f"--mask-ratio must be in [0, 1), got {a.mask_ratio}")


def _evaluate(model: Marlin, dataset: FaceClipDataset | None, strategy: str, mask_ratio: float | None,
              seed: int, device: torch.device, batch_size: int) -> float | None:
    """Mean masked MSE over fixed windows and fixed masks of the val clips."""
    if dataset is None:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    n = min(len(dataset), batch_size * 4)
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            items = [dataset[i] for i in range(lo, min(n, lo + batch_size))]
            video = torch.stack([it["video"] for it in items]).to(device)
            regions = torch.stack([it["regions"] for it in items]) if "regions" in items[0] else None
            gen = step_generator(seed, lo, stream=7)
            mask = make_mask(strategy, len(items), model.config, regions, gen, mask_ratio).to(device)
            pred = model(video, mask).float()
            total += F.mse_loss(pred, masked_targets(video, mask, model.config), reduction="sum").item()
            count += pred.numel()
    model.train(was_training)
    return total / max(1, count)


def _initial_model(init: Path | None, config: MarlinConfig) -> Marlin:
    """A random-init model, or the weights of ``init`` when their sizes match ``config``."""
    if init is None:
        return Marlin(config)
    model = Marlin.from_file(init, with_decoder=True)
    keep = dict(name=config.name, mask_ratio=config.mask_ratio)
    if model.config.replace(**keep) != config:
        raise TrainingError(f"--init {init}: its config {model.config.to_json()} does not match "
                            f"{config.to_json()} (--variant / --n-frames / --img-size)")
    model.config = config
    return model


def _datasets(a: argparse.Namespace, config: MarlinConfig, acc
              ) -> tuple[FaceClipDataset, FaceClipDataset | None, str]:
    """Train / val datasets and the masking strategy (a video folder is cached first)."""
    root = a.data
    if not is_clip_root(root):
        if acc.is_main_process:
            cache_video_folder(root, a.out / "clip_cache", config.img_size)
        acc.wait_for_everyone()
        root = a.out / "clip_cache"
    train_ids = split_clips(root, "train", a.val_fraction)
    val_ids = split_clips(root, "val", a.val_fraction)
    has_regions = all((root / c / "regions.npy").exists() for c in train_ids + val_ids)
    strategy = a.masking or ("fasking" if has_regions else "tube")
    needs_regions = strategy.startswith("fasking")
    if needs_regions and not has_regions:
        raise DataError(f"{root}: --masking {strategy} needs regions.npy in every clip; use --masking tube")
    ds_args = dict(n_frames=config.n_frames, stride=a.frame_stride, size=config.img_size,
                   with_regions=needs_regions)
    train_ds = FaceClipDataset(root, train_ids, **ds_args)
    val_ds = FaceClipDataset(root, val_ids[: a.val_clips], **ds_args) if val_ids and a.val_clips > 0 else None
    return train_ds, val_ds, strategy


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    _check_args(parser, a)
    acc = make_accelerator(cpu=a.cpu, mixed_precision=a.mixed_precision)
    seed_everything(a.seed)
    overrides = {k: v for k, v in (("n_frames", a.n_frames), ("img_size", a.img_size)) if v is not None}
    if a.mask_ratio is not None:
        overrides["mask_ratio"] = a.mask_ratio
    try:
        config = get_config(a.variant, **overrides)
    except ValueError as e:
        parser.error(str(e))

    train_ds, val_ds, strategy = _datasets(a, config, acc)
    model = _initial_model(a.init, config)
    global_batch = a.batch_size * acc.num_processes
    lr = a.lr if a.lr is not None else 1.5e-4 * global_batch / 256
    min_lr = a.min_lr if a.min_lr is not None else min(lr, 1e-5 * global_batch / 256)
    warmup = a.warmup_steps if a.warmup_steps is not None else round(0.02 * a.steps)
    adamw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=a.weight_decay)
    sched_args = dict(warmup_steps=warmup, total_steps=a.steps, min_lr=min_lr)
    opt = torch.optim.AdamW(model.parameters(), **adamw)
    scheds = {"marlin": warmup_cosine(opt, **sched_args)}
    ddp, opt = acc.prepare(model, opt)
    models, opts = {"marlin": ddp}, {"marlin": opt}
    critic = None
    if a.adv_weight > 0:  # kept out of DDP (the gradient penalty needs autograd.grad); synced by hand
        critic = PatchCritic(config.patch_dim, config.decoder_dim).to(acc.device)
        broadcast_module(critic, acc)
        opts["critic"] = torch.optim.AdamW(critic.parameters(), **adamw)
        models["critic"] = critic
        scheds["critic"] = warmup_cosine(opts["critic"], **sched_args)

    state_path = a.out / "state.pt"
    start = 0
    if a.resume:
        start, _ = load_training_state(state_path, models=models, optimizers=opts, schedulers=scheds,
                                       accelerator=acc)
        log.info("resumed from %s at step %d", state_path, start)
    elif acc.is_main_process:
        if state_path.exists():
            log.warning("%s exists and --resume is not given: this new run will overwrite it", state_path)
        text = json.dumps({k: str(v) for k, v in vars(a).items()}, indent=1)
        atomic_write(a.out / "args.json", lambda f: f.write(text.encode()))
    sampler = ResumableBatchSampler(len(train_ds), a.batch_size, seed=a.seed, rank=acc.process_index,
                                    world_size=acc.num_processes, start_step=start)
    batches = iter(make_loader(train_ds, sampler, num_workers=a.num_workers, seed=a.seed))
    logger = MetricLogger(a.out, enabled=acc.is_main_process, resume_step=start if a.resume else None)
    core = acc.unwrap_model(ddp)

    def save(step: int) -> None:
        save_training_state(state_path, models=models, optimizers=opts, schedulers=scheds, step=step,
                            extra={"masking": strategy}, accelerator=acc)
        if acc.is_main_process:
            core.save(a.out / "model.safetensors", metadata={"step": str(step), "masking": strategy})
            val = _evaluate(core, val_ds, strategy, config.mask_ratio, a.seed, acc.device, a.batch_size)
            if val is not None:
                logger.log(step, {"val/mse": val})
        acc.wait_for_everyone()

    if start == 0 and acc.is_main_process:
        val = _evaluate(core, val_ds, strategy, config.mask_ratio, a.seed, acc.device, a.batch_size)
        if val is not None:
            logger.log(0, {"val/mse": val})
    def last_good() -> Path | None:
        return state_path if state_path.exists() else None

    bar = progress(a.steps, start, enabled=acc.is_main_process, desc="pretrain")
    try:
        for step in range(start, a.steps):
            batch = next(batches)
            video = batch["video"].to(acc.device, non_blocking=True)
            regions = batch.get("regions")
            gen = step_generator(a.seed, step, acc.process_index)
            mask = make_mask(strategy, video.shape[0], config, regions, gen).to(acc.device)
            target = masked_targets(video, mask, config)
            pred = ddp(video, mask).float()
            metrics = {}
            if critic is not None:
                for _ in range(a.critic_steps):
                    loss_c = critic_loss(critic, target, pred.detach(), a.gp_weight, gen)
                    check_finite({"critic": loss_c}, step, acc, last_good())
                    opts["critic"].zero_grad(set_to_none=True)
                    loss_c.backward()
                    sync_gradients(critic, acc)
                    opts["critic"].step()
                scheds["critic"].step()
                metrics["train/critic"] = loss_c.detach()
            mse = F.mse_loss(pred, target)
            loss = mse
            if critic is not None:
                adv = -critic(pred).mean()
                loss = mse + a.adv_weight * adv
                metrics["train/adv"] = adv.detach()
            check_finite({"loss": loss, "mse": mse}, step, acc, last_good())
            opts["marlin"].zero_grad(set_to_none=True)
            acc.backward(loss)
            if a.clip_grad > 0:
                acc.clip_grad_norm_(ddp.parameters(), a.clip_grad)
            opts["marlin"].step()
            scheds["marlin"].step()
            done = step + 1
            bar.update(1)
            if done % a.log_every == 0 or done == a.steps:
                metrics.update({"train/mse": mse.detach(), "train/loss": loss.detach()})
                reduced = {k: acc.reduce(v.reshape(1), "mean").item() for k, v in metrics.items()}
                reduced["lr"] = scheds["marlin"].get_last_lr()[0]
                logger.log(done, reduced)
                bar.set_postfix(mse=f"{reduced['train/mse']:.4f}")
            if acc.is_main_process and a.sample_every > 0 and (done % a.sample_every == 0 or done == a.steps):
                recon = core.reconstruct(video[:1], mask[:1])
                grid = sample_grid(video[0], mask[0], recon[0], config)
                _save_png(a.out / "samples" / f"step_{done:07d}.png", grid)
                logger.image("samples", done, grid)
            if done % a.save_every == 0 or done == a.steps:
                save(done)
    finally:
        bar.close()
        logger.close()
    return 0


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(main, argv, bad_input=(ValueError,))  # our errors (DataError, ...) are ValueErrors


if __name__ == "__main__":
    sys.exit(cli())
