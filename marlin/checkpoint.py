"""Load and save MARLIN weights.

Accepted files (format detected from the content, not the suffix):

* the released ``marlin_vit_*_ytf.encoder.pt`` / ``.full.pt`` (plain state dicts),
* PyTorch Lightning ``.ckpt`` files (weights under ``"state_dict"``, ``discriminator.*`` dropped),
* the Hugging Face safetensors export (every key prefixed ``marlin.``),
* this project's safetensors files, which carry the :class:`MarlinConfig` as JSON in their
  metadata (``save_marlin``).

Pickled files are read with ``torch.load(weights_only=True)``.  Without a stored config the
variant is inferred from the tensor shapes (see :func:`infer_config`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .config import MODEL_CONFIGS, MarlinConfig, get_config
from .model.marlin import Marlin

__all__ = ["CheckpointError", "infer_config", "load_marlin", "load_state_dict", "save_marlin",
           "strip_prefixes"]

log = logging.getLogger(__name__)

#: Key prefixes removed on load: Hugging Face export, DataParallel/DDP, generic wrappers.
KNOWN_PREFIXES = ("marlin.", "module.", "model.", "_orig_mod.")
#: Keys of training-only parts that are dropped on load.
DROPPED_PREFIXES = ("discriminator.",)
CONFIG_METADATA_KEY = "marlin_config"


class CheckpointError(ValueError):
    """A MARLIN checkpoint cannot be read or does not fit the model; names the path and reason."""


def strip_prefixes(state_dict: dict[str, Tensor], prefixes: tuple[str, ...] = KNOWN_PREFIXES
                   ) -> dict[str, Tensor]:
    """Remove any leading known prefixes from every key (``marlin.module.x`` -> ``x``)."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def _one_line(error: Exception) -> str:
    """A short reason: torch.load's weights-only refusals are many lines long."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"weights_only=True refuses pickled object {found.group(1)}; not a plain state dict"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}"


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Tensor], MarlinConfig | None]:
    """Read a checkpoint into a clean MARLIN state dict.

    Returns
    -------
    (state_dict, config)
        Keys with known prefixes stripped and ``discriminator.*`` dropped; ``config`` is the
        stored config of this project's safetensors files, else ``None``.

    Raises
    ------
    CheckpointError
        Missing or unreadable file, or no tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    config = None
    try:
        if _is_safetensors(path):
            device = str(map_location)
            with safe_open(str(path), framework="pt", device=device) as f:
                raw = {key: f.get_tensor(key) for key in f.keys()}
                meta = f.metadata() or {}
            if CONFIG_METADATA_KEY in meta:
                config = MarlinConfig.from_json(meta[CONFIG_METADATA_KEY])
        else:
            obj = torch.load(path, map_location=map_location, weights_only=True)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]  # Lightning checkpoint
            if not isinstance(obj, dict):
                raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
            raw = obj
    except CheckpointError:
        raise
    except Exception as e:  # corrupt file, unsupported pickle content, bad metadata
        raise CheckpointError(f"{path}: cannot read checkpoint ({_one_line(e)})") from e
    state = {k: v for k, v in strip_prefixes(raw).items()
             if isinstance(v, Tensor) and not k.startswith(DROPPED_PREFIXES)}
    if not state:
        raise CheckpointError(f"{path}: no MARLIN tensors found")
    return state, config


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def _heads(dim: int) -> int:
    return max(1, dim // 64) if dim % max(1, dim // 64) == 0 else 1


def infer_config(state: dict[str, Tensor]) -> MarlinConfig:
    """Work out the variant from tensor shapes.

    Dims, depths, patch and tubelet sizes come from the tensors; a registry entry with the same
    numbers supplies head counts and clip length.  Otherwise heads = dim / 64 and 16 frames are
    assumed (the image size then follows from the position table).

    Raises
    ------
    CheckpointError
        When the encoder's patch embedding or position table is missing.
    """
    try:
        proj = state["encoder.patch_embedding.projection.weight"]  # (E, C, pt, ph, pw)
        n_tokens = state["encoder.pos_embedding.emb"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"cannot infer the MARLIN variant: tensor {e.args[0]!r} missing") from e
    enc_dim, channels, tubelet, patch, _ = proj.shape
    enc_depth = _count_blocks(state, "encoder.blocks.")
    hidden = state.get("encoder.blocks.0.mlp.layers.0.linear.weight")
    mlp_ratio = hidden.shape[0] / enc_dim if hidden is not None else 4.0
    dec_dim, dec_depth = None, None
    if "decoder.mask_token" in state:
        dec_dim = state["decoder.mask_token"].shape[-1]
        dec_depth = _count_blocks(state, "decoder.blocks.")
    for cfg in MODEL_CONFIGS.values():
        same = (cfg.encoder_dim, cfg.encoder_depth, cfg.patch_size, cfg.tubelet_size) == (
            enc_dim, enc_depth, patch, tubelet)
        if same and dec_dim is not None:
            same = (cfg.decoder_dim, cfg.decoder_depth) == (dec_dim, dec_depth)
        if same and cfg.n_tokens == n_tokens and cfg.mlp_ratio == mlp_ratio:
            return cfg
    n_frames = 16
    per_slice = n_tokens // (n_frames // tubelet)
    side = round(per_slice**0.5)
    if side * side * (n_frames // tubelet) != n_tokens:
        raise CheckpointError(f"cannot infer clip size from {n_tokens} positions; pass config=")
    dec_dim = dec_dim or enc_dim // 2
    return MarlinConfig(
        name="custom", img_size=side * patch, n_frames=n_frames, patch_size=patch, tubelet_size=tubelet,
        encoder_dim=enc_dim, encoder_depth=enc_depth, encoder_heads=_heads(enc_dim),
        decoder_dim=dec_dim, decoder_depth=dec_depth or 4, decoder_heads=_heads(dec_dim),
        mlp_ratio=mlp_ratio, in_channels=channels,
    )


def _short(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_marlin(path: str | os.PathLike, config: MarlinConfig | str | None = None,
                with_decoder: bool | None = None, map_location: str | torch.device = "cpu") -> Marlin:
    """Build a :class:`Marlin` from a checkpoint file (any format listed in the module doc).

    Parameters
    ----------
    path:
        Checkpoint file.
    config:
        Force a config (registry name or object) instead of the stored / inferred one.
    with_decoder:
        ``None``: build the decoder exactly when the file has one.  ``False``: encoder only
        (decoder weights in the file are ignored).  ``True``: the file must contain a decoder.
    map_location:
        Device the weights are loaded to.

    Returns
    -------
    Marlin
        In eval mode, float32, on ``map_location``.

    Raises
    ------
    CheckpointError
        Unreadable file, or missing / unexpected / wrongly shaped tensors (all listed at once).
    """
    state, stored = load_state_dict(path, map_location)
    cfg = get_config(config) if config is not None else (stored or infer_config(state))
    has_decoder = any(k.startswith(("decoder.", "enc_dec_proj.")) for k in state)
    if with_decoder is None:
        with_decoder = has_decoder
    if not with_decoder:
        state = {k: v for k, v in state.items() if not k.startswith(("decoder.", "enc_dec_proj."))}
    with torch.device("meta"):
        model = Marlin(cfg, with_decoder=with_decoder)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items()
                   if k in state and state[k].shape != s)
    if missing or unexpected or wrong:
        parts = [f"{path}: checkpoint does not fit MARLIN {cfg.name!r}"]
        if missing:
            parts.append(f"missing {len(missing)} keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_short(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {_short(wrong)}")
        raise CheckpointError("; ".join(parts))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    log.info("loaded MARLIN %s (%s) from %s", cfg.name, "full" if with_decoder else "encoder", path)
    return model.to(map_location).eval()


def save_marlin(model: Marlin, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` as safetensors with its config in the metadata; atomic (temp + rename).

    ``metadata`` adds string entries (e.g. training step) next to ``"marlin_config"``.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu", copy=False).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", **(metadata or {}), CONFIG_METADATA_KEY: model.config.to_json()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
