"""Where the evaluation finds the third-party weight files it needs (nothing is downloaded).

Each metric that needs external weights looks, in order, for:

1. the path given on the command line (``--syncnet-v2``, ``--fid-weights``, ``--lpips-weights``,
   ``--sync-expert``) or to the Python API;
2. the file under its usual name in the weights folder: ``$LIPSYNC_WEIGHTS`` if set, otherwise
   ``$XDG_CACHE_HOME/lipsync/weights`` (``~/.cache/lipsync/weights`` by default);
3. for files that torch hub would have cached (FID Inception, LPIPS backbones), torch hub's
   checkpoint folder (``$TORCH_HOME/hub/checkpoints``), read only.

A file that is not found raises :class:`MissingWeights`, whose message is one line naming the
file and where to put it; the evaluation CLI prints it and goes on with the other metrics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "LIPSYNC_WEIGHTS"


@dataclass(frozen=True)
class WeightSpec:
    """One external weight file.

    Attributes
    ----------
    key : registry name
    filename : the file's usual name (looked up in the weights folder)
    option : the CLI option that gives its path
    what : what it is used for, for messages
    source : where users obtain it
    torch_hub : whether torch hub's checkpoint folder may already hold it
    """

    key: str
    filename: str
    option: str
    what: str
    source: str
    torch_hub: bool = False


WEIGHTS: dict[str, WeightSpec] = {
    s.key: s
    for s in (
        WeightSpec(
            "syncnet_v2",
            "syncnet_v2.model",
            "--syncnet-v2",
            "SyncNet v2 (LSE-D / LSE-C)",
            "syncnet_python's download_model.sh",
        ),
        WeightSpec(
            "fid_inception",
            "pt_inception-2015-12-05-6726825d.pth",
            "--fid-weights",
            "FID Inception",
            "the pytorch-fid release 'fid_weights'",
            torch_hub=True,
        ),
        WeightSpec(
            "lpips_alex",
            "alexnet-owt-7be5be79.pth",
            "--lpips-weights",
            "LPIPS AlexNet backbone",
            "torchvision's ImageNet AlexNet weights",
            torch_hub=True,
        ),
        WeightSpec(
            "lpips_vgg",
            "vgg16-397923af.pth",
            "--lpips-weights",
            "LPIPS VGG16 backbone",
            "torchvision's ImageNet VGG16 weights",
            torch_hub=True,
        ),
        WeightSpec(
            "lpips_squeeze",
            "squeezenet1_1-b8a52dc0.pth",
            "--lpips-weights",
            "LPIPS SqueezeNet backbone",
            "torchvision's ImageNet SqueezeNet 1.1 weights",
            torch_hub=True,
        ),
        WeightSpec(
            "sync_expert",
            "sync_expert.safetensors",
            "--sync-expert",
            "this project's sync expert",
            "python -m lipsync.train_syncnet",
        ),
    )
}


class MissingWeights(FileNotFoundError):
    """A weight file that is not where it was looked for; ``str(e)`` is one line."""

    def __init__(self, message: str, spec: WeightSpec) -> None:
        super().__init__(message)
        self.spec = spec

    def __str__(self) -> str:
        return self.args[0]


def weights_dir() -> Path:
    """The weights folder: ``$LIPSYNC_WEIGHTS``, else ``$XDG_CACHE_HOME/lipsync/weights``
    (``~/.cache/lipsync/weights``). Not created here."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "lipsync" / "weights"


def _torch_hub_dir() -> Path:
    home = os.environ.get("TORCH_HOME")
    if not home:
        home = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def candidates(key: str) -> list[Path]:
    """Paths searched for ``key`` when no explicit path is given, in order."""
    spec = spec_for(key)
    paths = [weights_dir() / spec.filename]
    if spec.torch_hub:
        paths.append(_torch_hub_dir() / spec.filename)
    return paths


def spec_for(key: str) -> WeightSpec:
    """The :class:`WeightSpec` registered as ``key``."""
    try:
        return WEIGHTS[key]
    except KeyError:
        raise KeyError(f"unknown weight file {key!r}; known: {', '.join(WEIGHTS)}") from None


def resolve(key: str, explicit: str | Path | None = None) -> Path:
    """The path of weight file ``key``: ``explicit`` if given, else the first existing candidate.

    Raises
    ------
    MissingWeights with a one-line message naming the file and where to put it.
    """
    spec = spec_for(key)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        raise MissingWeights(f"{spec.what} weights not found: {path} ({spec.option}) is not a file", spec)
    for path in candidates(key):
        if path.is_file():
            return path
    raise MissingWeights(
        f"{spec.what} weights not found: put {spec.filename} (from {spec.source}) in {weights_dir()} "
        f"(or set ${ENV_VAR}, or pass {spec.option} PATH)",
        spec,
    )
