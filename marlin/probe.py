"""Linear probe / fine-tuning of MARLIN features for other facial tasks.

``python -m marlin.probe --csv labels.csv --checkpoint model.safetensors --out PROBE``

The CSV has a header; column ``path`` (or ``video``) names a video (relative paths are taken
from the CSV's folder).  Multiclass: one ``label`` column.  Multilabel (``--multilabel``): either
several 0/1 columns, or one ``label`` column of ``;``-separated tags.  An optional ``split``
column (train / val / test) fixes the held-out set; otherwise a stratified ``--val-fraction``
of the videos is held out.

Protocol (REFERENCE.md 1): frozen features of every window averaged over the video ->
standardised with train statistics -> one Linear layer (softmax cross-entropy, or per-label
BCE); Adam, lr 1e-4, betas (0.5, 0.9).  Features are cached under ``--cache`` keyed by video
and model, so a second probe on the same videos does not run the encoder.  ``--finetune``
trains the encoder too (one random window per video per step, mean-pooled features -> Linear;
videos are scored by averaging the logits of all their windows).

Writes ``PROBE/report.json`` (accuracy, AUC), ``PROBE/predictions.csv`` and ``PROBE/probe.pt``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marlin.config import available_models
from marlin.training import TrainingError, atomic_torch_save, atomic_write, run_cli, seed_everything

from .cli import HelpFormatter

log = logging.getLogger(__name__)

__all__ = ["LabelTable", "read_labels", "split_indices", "roc_auc", "evaluate", "main"]


@dataclass(frozen=True)
class LabelTable:
    """Videos and their targets: ``targets`` (V,) int64 class ids, or (V, L) float32 0/1."""

    paths: list[Path]
    classes: list[str]
    targets: np.ndarray
    multilabel: bool
    split: list[str] | None  # per video "train" / "val" / "test", when the CSV has a split column


def read_labels(path: str | Path, multilabel: bool = False) -> LabelTable:
    """Parse a label CSV (see the module docstring); raises :class:`TrainingError` on bad input."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TrainingError(f"{path}: unreadable label CSV ({e})") from e
    if not rows:
        raise TrainingError(f"{path}: no rows under the header")
    fields = list(rows[0])
    key = next((k for k in ("path", "video") if k in fields), None)
    if key is None:
        raise TrainingError(f"{path}: needs a 'path' (or 'video') column, has {fields}")
    has_split = "split" in fields
    label_cols = [c for c in fields if c not in (key, "split")]
    paths = [Path(r[key]) if Path(r[key]).is_absolute() else (path.parent / r[key]).resolve() for r in rows]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise TrainingError(f"{path}: {len(missing)} videos do not exist, e.g. {missing[0]}")
    if not label_cols:
        raise TrainingError(f"{path}: no label column")
    if multilabel and label_cols != ["label"]:
        try:
            targets = np.array([[float(r[c]) for c in label_cols] for r in rows], np.float32)
        except ValueError as e:
            raise TrainingError(f"{path}: multilabel columns {label_cols} must hold 0/1 ({e})") from e
        if not np.isin(targets, (0.0, 1.0)).all():
            raise TrainingError(f"{path}: multilabel columns {label_cols} must hold 0/1")
        classes = label_cols
    elif multilabel:
        tags = [{t.strip() for t in r["label"].split(";") if t.strip()} for r in rows]
        classes = sorted(set().union(*tags))
        targets = np.array([[c in t for c in classes] for t in tags], np.float32)
    else:
        if label_cols != ["label"]:
            raise TrainingError(f"{path}: multiclass needs one 'label' column, has {label_cols} "
                                "(use --multilabel for several)")
        names = [r["label"].strip() for r in rows]
        classes = sorted(set(names))
        if len(classes) < 2:
            raise TrainingError(f"{path}: needs at least two classes, found {classes}")
        targets = np.array([classes.index(n) for n in names], np.int64)
    split = None
    if has_split:
        split = [r["split"].strip().lower() for r in rows]
        bad = sorted(set(split) - {"train", "val", "test"})
        if bad:
            raise TrainingError(f"{path}: split values must be train/val/test, found {bad}")
    return LabelTable(paths, classes, targets, multilabel, split)


def split_indices(table: LabelTable, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) video indices: the CSV's split column, else a stratified random split."""
    n = len(table.paths)
    if table.split is not None:
        held = np.array([s != "train" for s in table.split])
        return np.flatnonzero(~held), np.flatnonzero(held)
    rng = np.random.default_rng(seed)
    strata = table.targets if not table.multilabel else np.zeros(n, np.int64)
    held = np.zeros(n, bool)
    for value in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == value))
        k = int(np.ceil(val_fraction * len(members))) if len(members) > 1 else 0
        held[members[:k]] = True
    if held.all() or not held.any():
        raise TrainingError(f"cannot hold out {val_fraction:.0%} of {n} videos and keep both sets non-empty")
    return np.flatnonzero(~held), np.flatnonzero(held)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN when one class is absent."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(logits: np.ndarray, targets: np.ndarray, multilabel: bool) -> dict[str, float]:
    """Accuracy and macro AUC of (V, C) logits.

    Multiclass: top-1 accuracy; AUC one-vs-rest per class (the positive class when C == 2).
    Multilabel: mean per-label accuracy at probability 0.5; AUC averaged over labels.
    Classes missing from ``targets`` (or present in every video) are left out of the AUC.
    """
    if multilabel:
        acc = float(((logits > 0) == (targets > 0.5)).mean())
        aucs = [roc_auc(logits[:, c], targets[:, c]) for c in range(logits.shape[1])]
    else:
        acc = float((logits.argmax(1) == targets).mean())
        probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
        cols = [1] if logits.shape[1] == 2 else range(logits.shape[1])
        aucs = [roc_auc(probs[:, c], targets == c) for c in cols]
    aucs = [a for a in aucs if not np.isnan(a)]
    return {"accuracy": acc, "auc": float(np.mean(aucs)) if aucs else float("nan")}


# --------------------------------------------------------------------------- features (I/O)
def _model_identity(a: argparse.Namespace) -> str:
    if a.checkpoint is not None:
        st = a.checkpoint.stat()
        return f"{a.checkpoint.resolve()}:{st.st_size}:{st.st_mtime_ns}:{a.n_frames}:{a.img_size}"
    return f"random:{a.variant}:{a.seed}:{a.n_frames}:{a.img_size}"


def _cache_key(video: Path, a: argparse.Namespace, kind: str) -> str:
    st = video.stat()
    text = json.dumps([str(video), st.st_size, st.st_mtime_ns, _model_identity(a), a.crop_face,
                       a.sample_rate, a.stride, a.fps, kind])
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def video_features(model, videos: list[Path], a: argparse.Namespace, device: torch.device) -> np.ndarray:
    """(V, E) float32 features per video, averaged over its windows; cached in ``a.cache``."""
    from tqdm.auto import tqdm

    from marlin.features import extract_video

    out = []
    for video in tqdm(videos, desc="features", disable=len(videos) < 2):
        path = a.cache / f"{_cache_key(video, a, 'pooled')}.npy"
        if path.exists():
            windows = np.load(path)
        else:
            feats = extract_video(model.to(device), video, crop_face=a.crop_face, sample_rate=a.sample_rate,
                                  stride=a.stride, fps=a.fps, batch_size=a.batch_size)
            windows = feats.features.numpy().astype(np.float32)  # (W, E)
            _save_npy(path, windows)
        out.append(windows.mean(0))
    return np.stack(out)


def video_windows(model, videos: list[Path], a: argparse.Namespace) -> list[np.ndarray]:
    """Per video, all windows as (W, T, S, S, 3) uint8 model-sized clips (cached)."""
    from marlin.features import iter_windows, prepare_frames
    from marlin.video import iter_frames

    cfg = model.config
    out = []
    for video in videos:
        path = a.cache / f"{_cache_key(video, a, 'windows')}.npy"
        if not path.exists():
            if a.crop_face:
                from marlin.face import iter_marlin_crops

                frames = iter_marlin_crops(video, size=cfg.img_size, fps=a.fps)
            else:
                frames = iter_frames(video, fps=a.fps)
            clips = [(prepare_frames(np.stack(images), cfg.img_size) * 255).round().byte().permute(1, 2, 3, 0)
                     for _, _, images in iter_windows(frames, cfg.n_frames, a.sample_rate, a.stride)]
            _save_npy(path, torch.stack(clips).numpy())
        out.append(np.load(path, mmap_mode="r"))
    return out


# --------------------------------------------------------------------------- training
class LinearProbe(nn.Module):
    """Standardise (fixed train mean / std), then one Linear: (B, E) -> (B, C) logits."""

    def __init__(self, dim: int, n_out: int, mean: Tensor | None = None, std: Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float())
        self.linear = nn.Linear(dim, n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear((x - self.mean) / self.std)


def _loss(logits: Tensor, target: Tensor, multilabel: bool) -> Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target)


def _adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.9))


def train_linear(feats: np.ndarray, targets: np.ndarray, n_out: int, multilabel: bool, a) -> LinearProbe:
    """Fit a :class:`LinearProbe` on (V, E) features with minibatch Adam for ``a.epochs`` epochs."""
    x = torch.from_numpy(feats).float()
    y = torch.from_numpy(targets)
    probe = LinearProbe(x.shape[1], n_out, x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6))
    opt = _adam(probe.parameters(), a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    for _ in range(a.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(a.batch_size):
            loss = _loss(probe(x[idx]), y[idx], multilabel)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe.eval()


def _window_batch(windows: np.ndarray, device: torch.device) -> Tensor:
    """(W, T, S, S, 3) uint8 -> (W, 3, T, S, S) float in [0, 1]."""
    return torch.from_numpy(np.array(windows)).to(device).permute(0, 4, 1, 2, 3).float() / 255


def finetune(model, windows: list[np.ndarray], targets: np.ndarray, n_out: int, multilabel: bool,
             a, device: torch.device) -> nn.Module:
    """Train encoder + Linear on pooled features of one random window per video per sample.

    The Linear head first fits the starting encoder's features (a linear probe), so fine-tuning
    starts from a calibrated classifier (linear-probe-then-fine-tune).
    """
    from tqdm.auto import tqdm

    encoder = model.encoder.to(device).eval()
    with torch.no_grad():  # the head starts as a linear probe on the starting encoder's features
        start = np.stack([encoder.extract_features(_window_batch(w[:a.batch_size], device), keep_seq=False)
                          .mean(0).cpu().numpy() for w in windows])
    head = train_linear(start, targets, n_out, multilabel, a).to(device).train()
    encoder.train()
    opt = _adam(list(encoder.parameters()) + list(head.parameters()), a.lr)
    rng = np.random.default_rng(a.seed)
    y = torch.from_numpy(targets).to(device)
    for _ in tqdm(range(a.epochs), desc="finetune", disable=a.epochs < 5):
        n_batches = max(1, int(np.ceil(len(windows) / a.batch_size)))
        for idx in np.array_split(rng.permutation(len(windows)), n_batches):
            picks = [windows[i][rng.integers(len(windows[i]))] for i in idx]
            clips = _window_batch(np.stack(picks), device)
            loss = _loss(head(encoder.extract_features(clips, keep_seq=False)), y[idx], multilabel)
            opt.zero_grad()
            loss.backward()
            opt.step()
    encoder.eval()
    return nn.ModuleDict({"encoder": encoder, "head": head.eval()})


@torch.no_grad()
def finetuned_logits(net: nn.Module, windows: list[np.ndarray], device: torch.device,
                     batch: int) -> np.ndarray:
    """(V, C) logits: the mean over each video's windows."""
    out = []
    for w in windows:
        feats = [net["encoder"].extract_features(_window_batch(w[i:i + batch], device), keep_seq=False)
                 for i in range(0, len(w), batch)]
        logits = net["head"](torch.cat(feats))
        out.append(logits.mean(0).cpu())
    return torch.stack(out).numpy()


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m marlin.probe", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--csv", type=Path, required=True, help="label CSV: path + label(s) [+ split]")
    p.add_argument("--out", type=Path, required=True, help="output folder (report.json, predictions.csv)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="MARLIN weights (any file Marlin.from_file reads)")
    src.add_argument("--variant", choices=available_models(), help="random-init encoder (a baseline)")
    p.add_argument("--n-frames", type=int, default=None, help="frames per window (default: the model's)")
    p.add_argument("--img-size", type=int, default=None, help="window side (default: the model's)")
    p.add_argument("--multilabel", action="store_true",
                   help="several 0/1 label columns, or one 'label' column of ';'-separated tags")
    p.add_argument("--finetune", action="store_true", help="train the encoder too, not only the Linear layer")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="held-out share when the CSV has no split column")
    p.add_argument("--epochs", type=int, default=200, help="passes over the training videos")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam lr (betas 0.5, 0.9)")
    p.add_argument("--batch-size", type=int, default=32, help="videos per step (windows per encoder pass)")
    p.add_argument("--crop-face", action="store_true", help="use tracked face crops (marlin.face)")
    p.add_argument("--sample-rate", type=int, default=2, help="take every k-th frame")
    p.add_argument("--stride", type=int, default=16, help="sampled frames between window starts")
    p.add_argument("--fps", type=float, default=None, help="resample videos to this rate first")
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default OUT/cache)")
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and batch order")
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even if a GPU is visible")
    return p


def _load_model(a: argparse.Namespace):
    from marlin.config import get_config
    from marlin.model import Marlin

    overrides = {k: v for k, v in (("n_frames", a.n_frames), ("img_size", a.img_size)) if v is not None}
    if a.checkpoint is not None:
        if not a.checkpoint.exists():
            raise TrainingError(f"--checkpoint {a.checkpoint}: no such file")
        model = Marlin.from_file(a.checkpoint, with_decoder=False)
        if overrides:  # a different clip length / size: positions are recomputed for the new grid
            state = {k: v for k, v in model.state_dict().items() if not k.endswith("pos_embedding.emb")}
            model = Marlin(model.config.replace(**overrides), with_decoder=False)
            model.load_state_dict(state, strict=False)
        return model
    return Marlin(get_config(a.variant, **overrides), with_decoder=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "sample_rate", "stride"):
        if getattr(a, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < a.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {a.val_fraction}")
    seed_everything(a.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.cpu else "cpu")
    a.cache = a.cache or a.out / "cache"
    table = read_labels(a.csv, a.multilabel)
    train, held = split_indices(table, a.val_fraction, a.seed)
    model = _load_model(a).eval()
    n_out = len(table.classes)
    if a.finetune:
        windows = video_windows(model, table.paths, a)
        net = finetune(model, [windows[i] for i in train], table.targets[train], n_out, table.multilabel,
                       a, device)
        logits = finetuned_logits(net, [windows[i] for i in held], device, a.batch_size)
        state = {f"encoder.{k}": v for k, v in net["encoder"].state_dict().items()}
        state.update({f"head.{k}": v for k, v in net["head"].state_dict().items()})
    else:
        feats = video_features(model, table.paths, a, device)
        probe = train_linear(feats[train], table.targets[train], n_out, table.multilabel, a)
        with torch.no_grad():
            logits = probe(torch.from_numpy(feats[held])).numpy()
        state = {f"head.{k}": v for k, v in probe.state_dict().items()}
    scores = evaluate(logits, table.targets[held], table.multilabel)
    report = {"task": "multilabel" if table.multilabel else "multiclass",
              "mode": "finetune" if a.finetune else "linear", "classes": table.classes,
              "n_train": int(len(train)), "n_heldout": int(len(held)),
              "chance_accuracy": _chance(table, held), **scores}
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"state_dict": state, "classes": table.classes, "multilabel": table.multilabel,
                       "model": _model_identity(a)}, a.out / "probe.pt")
    atomic_write(a.out / "report.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    rows = ["path," + ",".join(table.classes)] + [
        f"{table.paths[i]}," + ",".join(f"{v:.5g}" for v in logit) for i, logit in zip(held, logits)]
    atomic_write(a.out / "predictions.csv", lambda f: f.write(("\n".join(rows) + "\n").encode()))
    print(f"held-out accuracy {scores['accuracy']:.3f} (chance {report['chance_accuracy']:.3f}), "
          f"AUC {scores['auc']:.3f} on {len(held)} videos -> {a.out / 'report.json'}")
    return 0


def _chance(table: LabelTable, held: np.ndarray) -> float:
    """Accuracy of always answering the most frequent held-out class (per label when multilabel)."""
    t = table.targets[held]
    if table.multilabel:
        return float(np.maximum(t.mean(0), 1 - t.mean(0)).mean())
    return float(np.bincount(t).max() / len(t))


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(main, argv, bad_input=(ValueError,))


if __name__ == "__main__":
    sys.exit(cli())
