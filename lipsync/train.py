"""Train a lip-sync generator: ``python -m lipsync.train --data DATA --out RUN [--model NAME] [--expert E]``.

``--model wav2lip`` (default) is the classic 96-px generator; ``marlin_lip_tiny`` /
``marlin_lip_base`` the MARLIN-conditioned ones (pretrained encoder from ``--marlin-checkpoint``),
``vit_lip_*`` the random-init ViT baseline.  Loss: L1 + the frozen expert's sync loss (switched
on once the eval sync loss is below ``--sync-threshold``) + the quality discriminator's GAN loss
(+ with ``--reader``, a frozen mouth-opening reader's loss on the generated mouth).
New speaker: ``--init BASE_CHECKPOINT --data SPEAKER_DATA`` fine-tunes a trained generator.
Writes ``RUN/generator.safetensors`` (``python -m lipsync.infer --checkpoint``), ``RUN/state.pt``
(``--resume``), ``RUN/metrics.csv``, ``RUN/tb/`` and ``RUN/samples/`` (PNG grids, mp4 dubs).
Launch on many GPUs with ``accelerate launch -m lipsync.train ...`` or ``torchrun -m ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lipsync.data.datasets import REFERENCES
from lipsync.models import GENERATORS, MODELS
from marlin.cli import HelpFormatter
from marlin.training import add_run_args

from .training.common import OneLineParser, add_eval_args, check_args, parse_overrides, trainer_cli
from .training.generator_loop import TOLD_SHAPES, GeneratorTrainConfig, train_generator

__all__ = ["build_parser", "main", "cli"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m lipsync.train", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="preprocessed data folder (lipsync.preprocess)")
    p.add_argument("--model", default="wav2lip",
                   choices=[k for k, s in MODELS.items() if s.architecture in GENERATORS],
                   help="generator size (ignored with --init)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a model config field, e.g. --set img_size=192 (repeatable); with --init "
                        "only fields that keep the weights' shapes, e.g. --set reference_mask=null, or "
                        "widen a MARLIN generator's decoder (decoder_channels, output_channels)")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune this generator checkpoint (ours or wav2lip.pth / wav2lip_gan.pth)")
    p.add_argument("--marlin-checkpoint", type=Path, default=None,
                   help="MARLIN encoder weights for a marlin_lip_* generator (marlin.pretrain output "
                        "or a release file)")
    p.add_argument("--expert", type=Path, default=None,
                   help="frozen sync expert (lipsync.train_syncnet output or lipsync_expert.pth); "
                        "none: no sync loss")
    p.add_argument("--reader", type=Path, default=None,
                   help="frozen mouth-opening reader (lipsync.train_reader output): adds a loss on the "
                        "opening it reads in each generated mouth against the target frame's, and for "
                        "mouth_reference generators reads each reference frame's opening; none: off")
    p.add_argument("--reader-wt", type=float, default=1.0, help="weight of the reader's loss (with --reader)")
    p.add_argument("--disc-init", type=Path, default=None, help="quality discriminator weights to start from")
    p.add_argument("--disc-model", default="quality_disc",
                   choices=[k for k, s in MODELS.items() if s.architecture == "quality_disc"],
                   help="discriminator size (without --disc-init)")
    p.add_argument("--lr", type=float, default=1e-4, help="generator Adam learning rate")
    p.add_argument("--disc-lr", type=float, default=1e-4, help="discriminator Adam learning rate")
    p.add_argument("--mouth-wt", type=float, default=0.0,
                   help="extra weight of the L1 inside the lips' region (0: plain L1 as in Wav2Lip; "
                        "a few, e.g. 4, makes small runs learn the mouth sooner)")
    p.add_argument("--opening-wt", type=float, default=0.0,
                   help="weight of an auxiliary read-out of each frame's mouth opening (from the stored "
                        "landmarks) from the generator's audio embedding; 1 makes small runs find the "
                        "audio much sooner (0: off, as in Wav2Lip); required by generators with "
                        "mouth_input, whose own mouth_head it trains (opening and width), and with "
                        "mouth_teeth its teeth_head (the tooth area, a term of the same weight)")
    p.add_argument("--warp-wt", type=float, default=0.0,
                   help="generators with warp: weight of the L1 inside the lips' region between the "
                        "warped reference and the target (sharp and blurred), so the flow learns to "
                        "move the lips even where the output does not copy them yet (0: off)")
    p.add_argument("--edge-wt", type=float, default=0.0,
                   help="weight of the L1 between the generated and true frames' pixel differences "
                        "(their edges) inside the lips' region, against soft lips (0: off)")
    p.add_argument("--change-wt", type=float, default=0.0,
                   help="weight of the L1 over the pixels where the target differs from the reference "
                        "(what the audio has to redraw; meant for --reference counterfactual) (0: off)")
    p.add_argument("--reference", default="window", choices=REFERENCES,
                   help="the reference each training sample shows the generator: 'window', another "
                        "window of the clip (Wav2Lip); 'counterfactual', the target frames themselves "
                        "speaking other speech, as inference shows them (synthetic clips only: write "
                        "them with python -m lipsync.data.synthetic.counterfactual)")
    p.add_argument("--told-shape", default="measured", choices=TOLD_SHAPES,
                   help="generators with mouth_input: the mouth shape the decoder is told in training, "
                        "'measured' (each target frame's, from its landmarks) or 'head' (what "
                        "mouth_head predicts from the audio, as inference tells it)")
    p.add_argument("--train-frames", type=int, default=0,
                   help="MARLIN generators: decode a random run of this many of each window's 16 "
                        "frames per step (0: all 16; 5 with a 5-frame expert trains about 3x more "
                        "windows per second)")
    p.add_argument("--sync-wt", type=float, default=0.03, help="weight of the sync loss once on")
    p.add_argument("--sync-threshold", type=float, default=0.75,
                   help="switch the sync loss on when the eval sync loss falls below this")
    p.add_argument("--sync-from-start", action=argparse.BooleanOptionalAction, default=False,
                   help="use the sync loss from step 0 (e.g. when fine-tuning a synced generator)")
    p.add_argument("--disc-wt", type=float, default=0.07, help="weight of the GAN loss (0: no discriminator)")
    add_eval_args(p, val_samples=64)
    p.add_argument("--sample-every", type=int, default=500,
                   help="steps between sample grids/videos (0: never)")
    p.add_argument("--sample-video", action=argparse.BooleanOptionalAction, default=True,
                   help="also write an mp4 of a val clip dubbed with its own audio")
    add_run_args(p, steps=100000, batch_size=16, save_every=500, log_every=10)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    check_args(p, a, positive=("steps", "batch_size", "log_every", "save_every", "eval_every", "val_samples"),
               existing=("data", "init", "marlin_checkpoint", "expert", "disc_init", "reader"))
    if min(a.mouth_wt, a.train_frames, a.opening_wt, a.reader_wt, a.warp_wt, a.edge_wt, a.change_wt) < 0:
        p.error(f"--mouth-wt, --opening-wt, --reader-wt, --warp-wt, --edge-wt, --change-wt and "
                f"--train-frames must be >= 0, got {a.mouth_wt}, {a.opening_wt}, {a.reader_wt}, "
                f"{a.warp_wt}, {a.edge_wt}, {a.change_wt}, {a.train_frames}")
    if not 0 <= a.sync_wt + max(a.disc_wt, 0.0) < 1 or a.sync_wt < 0 or a.disc_wt < 0:
        p.error(f"need --sync-wt, --disc-wt >= 0 and --sync-wt + --disc-wt < 1, got {a.sync_wt}, {a.disc_wt}")
    cfg = GeneratorTrainConfig(
        data=a.data, out=a.out, model=a.model, overrides=tuple(parse_overrides(a.overrides).items()),
        init=a.init, marlin_checkpoint=a.marlin_checkpoint, expert=a.expert, disc_init=a.disc_init,
        reader=a.reader, reader_wt=a.reader_wt,
        disc_model=a.disc_model, mouth_wt=a.mouth_wt, opening_wt=a.opening_wt, warp_wt=a.warp_wt,
        edge_wt=a.edge_wt, change_wt=a.change_wt,
        train_frames=a.train_frames, reference=a.reference, told_shape=a.told_shape,
        steps=a.steps, batch_size=a.batch_size, lr=a.lr, disc_lr=a.disc_lr, sync_wt=a.sync_wt,
        sync_threshold=a.sync_threshold,
        sync_from_start=a.sync_from_start, disc_wt=a.disc_wt, val_fraction=a.val_fraction,
        val_samples=a.val_samples, eval_every=a.eval_every, save_every=a.save_every, log_every=a.log_every,
        sample_every=a.sample_every, sample_video=a.sample_video, num_workers=a.num_workers, seed=a.seed,
        resume=a.resume, cpu=a.cpu, mixed_precision=a.mixed_precision)
    train_generator(cfg)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return trainer_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
