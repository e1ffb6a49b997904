"""Average checkpoints of one model: ``python -m lipsync.average A B [C ...] --out OUT [--set K=V]``.

Uniform weight averaging (as in stochastic weight averaging) of saves of one run, for example
the generator files a run leaves at the end of each resumed stage. With the constant learning
rate and the GAN of the last stage, single checkpoints swing by a few hundredths in sync from
one save to the next; their average is steadier.
Any files ``lipsync.checkpoints.load`` reads can be averaged, as long as they hold the same
architecture and config. OUT is written in this project's safetensors format (atomically, never
over one of the inputs) with ``averaged_from`` in its metadata.

``--set KEY=VALUE`` also changes config fields that leave every weight as it is, such as the
MARLIN generator's inference-time ``copy_bias``, ``copy_gate`` and ``mouth_gain``
(docs/usage/models.md), as ``lipsync.train --init --set`` does; with ``--set``, a single
checkpoint may be given, to re-save it so (``config_changed`` in its metadata).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from marlin.cli import HelpFormatter
from marlin.training import run_cli

from .checkpoints import CheckpointError, average, load, save
from .training.common import OneLineParser, TrainingError, parse_overrides, reconfigured

__all__ = ["build_parser", "main", "cli"]

# rebuilt by save() from the model itself; the rest of the last file's metadata is kept
_REBUILT = ("format", "architecture", "config", "colour", "path")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m lipsync.average", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                   help="two or more checkpoints of one model (same architecture and config); one "
                        "with --set")
    p.add_argument("--out", type=Path, required=True,
                   help="checkpoint to write (.safetensors): the mean, or the one re-saved with --set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a config field that leaves every weight as it is (repeatable), e.g. "
                        "copy_bias=0.75; modules a field adds start neutral, any other change is refused")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    out = a.out
    if out.is_dir():
        raise CheckpointError(f"output {out}: is a directory")
    if not out.parent.is_dir():
        raise CheckpointError(f"output {out}: folder {out.parent} does not exist")
    for p in a.checkpoints:
        if p.exists() and out.exists() and out.samefile(p):
            raise CheckpointError(f"output {out}: is one of the inputs; choose a new file")
    overrides = parse_overrides(a.overrides)
    if len(a.checkpoints) < 2 and not overrides:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(a.checkpoints)} "
                              "(one is re-saved only with --set)")
    result = average(a.checkpoints) if len(a.checkpoints) > 1 else load(a.checkpoints[0])
    meta = {k: v for k, v in result.meta.items() if k not in _REBUILT}
    model = result.model
    if overrides:
        model = reconfigured(model, overrides, a.checkpoints[-1], widen=False)
        meta["config_changed"] = json.dumps(overrides, sort_keys=True, default=list)
    save(out, model, meta)
    log = logging.getLogger(__name__)
    if len(a.checkpoints) > 1:
        steps = ", ".join(str(item["steps"]) for item in meta["averaged_from"])
        log.info("averaged %d checkpoints (steps %s) into %s", len(a.checkpoints), steps, out)
    else:
        log.info("re-saved %s with %s as %s", a.checkpoints[0], overrides, out)
    return 0


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(main, argv, bad_input=(CheckpointError, TrainingError))


if __name__ == "__main__":
    sys.exit(cli())
