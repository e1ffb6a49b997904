"""Face-clip datasets: the preprocessed layout (written by ``lipsync.preprocess``) and video folders.

Layout of one preprocessed clip (the contract between preprocessing and every trainer)::

    <root>/<clip_id>/frames.npy     (T, S, S, 3) uint8 RGB square face crops, 25 fps
    <root>/<clip_id>/regions.npy    (T, S, S) uint8 region labels (REGION_NAMES), optional
    <root>/<clip_id>/landmarks.npy  (T, 478, 2) float32 crop pixel coordinates, optional
    <root>/<clip_id>/boxes.npy      (T, 4) float32 (x1, y1, x2, y2) boxes in the source video
    <root>/<clip_id>/audio.wav      16 kHz mono, optional for MARLIN
    <root>/<clip_id>/meta.json      {"fps": 25, "n_frames": T, "size": S, "source": ..., "identity": ...}
    <root>/train.txt, val.txt       clip ids, one per line (else a deterministic identity split)

Arrays are opened with ``np.load(mmap_mode="r")``, so a dataset holds no pixels in memory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

__all__ = [
    "DataError", "REGION_NAMES", "VIDEO_SUFFIXES", "Clip", "write_clip", "read_clip", "list_clips",
    "split_clips", "is_clip_root", "FaceClipDataset", "cache_video_folder", "resize_clip",
]

#: Region label ids of ``regions.npy`` (same ids as ``marlin.face.REGIONS``).
REGION_NAMES = ("background", "skin", "right_brow_eye", "left_brow_eye", "nose", "mouth", "hair")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv")
AUDIO_RATE = 16000


class DataError(ValueError):
    """A clip folder or dataset that cannot be used; the message names the path and the reason."""


@dataclass(frozen=True)
class Clip:
    """One preprocessed clip; arrays are read-only memory maps."""

    clip_id: str
    path: Path
    frames: np.ndarray  # (T, S, S, 3) uint8 RGB
    boxes: np.ndarray  # (T, 4) float32
    meta: dict[str, Any] = field(default_factory=dict)
    regions: np.ndarray | None = None  # (T, S, S) uint8
    landmarks: np.ndarray | None = None  # (T, 478, 2) float32
    audio_path: Path | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])


# --------------------------------------------------------------------------- writing / reading
def _check(cond: bool, where: str, reason: str) -> None:
    if not cond:
        raise DataError(f"{where}: {reason}")


def write_clip(root: str | Path, clip_id: str, frames: np.ndarray, regions: np.ndarray | None = None,
               landmarks: np.ndarray | None = None, boxes: np.ndarray | None = None,
               audio: np.ndarray | None = None, meta: Mapping[str, Any] | None = None) -> Path:
    """Write one clip in the preprocessed layout, atomically (a temp folder renamed into place).

    Parameters
    ----------
    frames : (T, S, S, 3) uint8 RGB square crops.
    regions : (T, S, S) uint8 labels in ``range(len(REGION_NAMES))``, or None.
    landmarks : (T, K, 2) float crop pixel coordinates, or None.
    boxes : (T, 4) float boxes in the source video; None writes the whole crop ``(0, 0, S, S)``.
    audio : (N,) float mono at 16 kHz in [-1, 1], or None.
    meta : extra fields for meta.json ("fps" defaults to 25; "n_frames" and "size" are set here).

    Returns the clip folder ``root/clip_id``; an existing clip of that id is replaced.
    """
    root = Path(root)
    where = str(root / clip_id)
    _check(bool(clip_id) and "/" not in clip_id and not clip_id.startswith("."), where, "bad clip id")
    frames = np.asarray(frames)
    _check(frames.ndim == 4 and frames.shape[3] == 3 and frames.shape[1] == frames.shape[2],
           where, f"frames must be (T, S, S, 3), got {frames.shape}")
    _check(frames.dtype == np.uint8 and len(frames) > 0, where, "frames must be non-empty uint8")
    t, s = frames.shape[:2]
    arrays = {"frames": frames}
    if regions is not None:
        regions = np.asarray(regions)
        _check(regions.shape == (t, s, s) and regions.dtype == np.uint8, where,
               f"regions must be uint8 {(t, s, s)}, got {regions.dtype} {regions.shape}")
        arrays["regions"] = regions
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32)
        _check(landmarks.ndim == 3 and landmarks.shape[0] == t and landmarks.shape[2] == 2, where,
               f"landmarks must be (T, K, 2), got {landmarks.shape}")
        arrays["landmarks"] = landmarks
    boxes = np.tile(np.float32([0, 0, s, s]), (t, 1)) if boxes is None else np.asarray(boxes, np.float32)
    _check(boxes.shape == (t, 4), where, f"boxes must be ({t}, 4), got {boxes.shape}")
    arrays["boxes"] = boxes
    info = {"fps": 25, **dict(meta or {}), "n_frames": int(t), "size": int(s)}

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{clip_id}.", suffix=".tmp", dir=root))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        if audio is not None:
            import soundfile

            soundfile.write(tmp / "audio.wav", np.clip(np.asarray(audio, np.float32), -1, 1),
                            AUDIO_RATE, subtype="PCM_16")
        (tmp / "meta.json").write_text(json.dumps(info, indent=1, default=str))
        target = root / clip_id
        old = None
        if target.exists():
            old = target.with_name(f".{clip_id}.old.{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _load(path: Path, required: bool) -> np.ndarray | None:
    if not path.exists():
        if required:
            raise DataError(f"{path}: missing")
        return None
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable array ({e})") from e


def read_clip(root: str | Path, clip_id: str) -> Clip:
    """Open ``root/clip_id`` (arrays memory-mapped) and check that its parts agree."""
    path = Path(root) / clip_id
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError as e:
        raise DataError(f"{path}: no meta.json (not a preprocessed clip)") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path / 'meta.json'}: invalid JSON ({e})") from e
    frames = _load(path / "frames.npy", True)
    _check(frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8, str(path),
           f"frames.npy must be (T, S, S, 3) uint8, got {frames.dtype} {frames.shape}")
    t, s = frames.shape[:2]
    regions = _load(path / "regions.npy", False)
    _check(regions is None or regions.shape == (t, s, s), str(path),
           f"regions.npy shape {getattr(regions, 'shape', None)} does not match frames {(t, s, s)}")
    boxes = _load(path / "boxes.npy", False)
    boxes = np.tile(np.float32([0, 0, s, s]), (t, 1)) if boxes is None else boxes
    audio = path / "audio.wav"
    return Clip(clip_id=clip_id, path=path, frames=frames, boxes=boxes, meta=meta, regions=regions,
                landmarks=_load(path / "landmarks.npy", False), audio_path=audio if audio.exists() else None)


def list_clips(root: str | Path) -> list[str]:
    """Sorted ids of the clip folders under ``root`` (folders holding meta.json and frames.npy)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()
                  and (p / "frames.npy").exists())


def is_clip_root(root: str | Path) -> bool:
    """True when ``root`` holds preprocessed clips (rather than plain videos)."""
    return Path(root).is_dir() and bool(list_clips(root))


def split_clips(root: str | Path, split: str = "train", val_fraction: float = 0.1) -> list[str]:
    """Clip ids of a split: ``train``, ``val`` or ``all``.

    ``root/train.txt`` and ``root/val.txt`` are used when present.  Otherwise the split is by
    identity (``meta["identity"]``, else the clip id): identities are ordered by a CRC32 of their
    name and the first ``ceil(val_fraction * n)`` go to val, keeping at least one for training.
    """
    root = Path(root)
    if split not in ("train", "val", "all"):
        raise DataError(f"split {split!r} is not one of ('train', 'val', 'all')")
    ids = list_clips(root)
    if not ids:
        raise DataError(f"{root}: no preprocessed clips (folders with frames.npy and meta.json)")
    if split == "all":
        return ids
    listed = root / f"{split}.txt"
    if listed.exists():
        wanted = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        missing = sorted(set(wanted) - set(ids))
        if missing:
            raise DataError(f"{listed}: names clips that do not exist: {missing[:5]}")
        return wanted
    groups: dict[str, list[str]] = {}
    for cid in ids:
        try:
            ident = json.loads((root / cid / "meta.json").read_text()).get("identity") or cid
        except (OSError, json.JSONDecodeError):
            ident = cid
        groups.setdefault(str(ident), []).append(cid)
    order = sorted(groups, key=lambda g: (zlib.crc32(g.encode()), g))
    n_val = min(len(order) - 1, int(np.ceil(val_fraction * len(order)))) if val_fraction > 0 else 0
    chosen = order[:n_val] if split == "val" else order[n_val:]
    return sorted(c for g in chosen for c in groups[g])


# --------------------------------------------------------------------------- dataset
def resize_clip(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(T, 3, H, W)`` float frames to ``size`` x ``size`` (bilinear, antialiased)."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class FaceClipDataset(Dataset):
    """Windows of ``n_frames`` frames taken every ``stride`` frames from a random start.

    Indexing with an int gives a fixed window per clip; with ``(index, sample_seed)`` (the keys of
    :class:`marlin.training.ResumableBatchSampler`) the start is drawn from ``sample_seed``.
    Clips shorter than the window repeat their last frame.

    Items are dicts: ``video`` (3, n_frames, size, size) float32 in [0, 1]; ``regions``
    (n_frames, size, size) uint8 when ``with_regions``; ``index`` and ``start`` ints.
    """

    def __init__(self, root: str | Path, clip_ids: Sequence[str] | None = None, *, split: str = "train",
                 n_frames: int = 16, stride: int = 2, size: int | None = None,
                 with_regions: bool = False, val_fraction: float = 0.1):
        self.root = Path(root)
        self.clip_ids = list(clip_ids) if clip_ids is not None else split_clips(root, split, val_fraction)
        if not self.clip_ids:
            raise DataError(f"{root}: split {split!r} holds no clips")
        if n_frames < 1 or stride < 1:
            raise DataError(f"need n_frames >= 1 and stride >= 1, got {n_frames}, {stride}")
        self.n_frames, self.stride, self.size, self.with_regions = n_frames, stride, size, with_regions
        self._clips: dict[int, Clip] = {}
        lengths = []
        for i in range(len(self.clip_ids)):
            clip = self.clip(i)
            if with_regions and clip.regions is None:
                raise DataError(f"{clip.path}: no regions.npy, needed for region-guided masking")
            lengths.append(clip.n_frames)
        self.lengths = np.asarray(lengths)
        short = int((self.lengths < self.span).sum())
        if short:
            log.warning("%d of %d clips are shorter than the %d-frame window; their last frame repeats",
                        short, len(lengths), self.span)
        self._clips.clear()  # re-opened lazily in each worker process

    @property
    def span(self) -> int:
        """Source frames covered by one window: ``(n_frames - 1) * stride + 1``."""
        return (self.n_frames - 1) * self.stride + 1

    def clip(self, index: int) -> Clip:
        if index not in self._clips:
            self._clips[index] = read_clip(self.root, self.clip_ids[index])
        return self._clips[index]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def frame_indices(self, index: int, sample_seed: int | None) -> np.ndarray:
        """Source frame numbers of the window for ``index`` (centre window when no seed)."""
        n = int(self.lengths[index])
        room = max(0, n - self.span)
        if sample_seed is None:
            start = room // 2
        else:
            start = int(np.random.default_rng(sample_seed).integers(0, room + 1))
        return np.minimum(start + self.stride * np.arange(self.n_frames), n - 1)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        clip = self.clip(index)
        idx = self.frame_indices(index, seed)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames[idx]))  # (T, S, S, 3) uint8
        video = frames.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.size or clip.size
        video = resize_clip(video, size).clamp_(0.0, 1.0)
        item = {"video": video.permute(1, 0, 2, 3).contiguous(), "index": index, "start": int(idx[0])}
        if self.with_regions:
            reg = torch.from_numpy(np.ascontiguousarray(clip.regions[idx]))
            if reg.shape[-1] != size:
                reg = F.interpolate(reg[:, None].float(), size=(size, size), mode="nearest-exact")
                reg = reg[:, 0].byte()
            item["regions"] = reg
        return item


# --------------------------------------------------------------------------- plain video folders
def _square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an (H, W, 3) uint8 frame to a centred square, then resize to ``size``."""
    h, w = frame.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[y0:y0 + h, x0:x0 + w] = frame
    t = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    t = resize_clip(t, size)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def cache_video_folder(folder: str | Path, cache: str | Path, size: int, *,
                       videos: Iterable[Path] | None = None, progress: bool = True) -> Path:
    """Decode a folder of face videos once into the preprocessed layout under ``cache``.

    Frames are resampled to 25 fps, zero-padded to a centred square and resized to ``size``;
    no regions or landmarks are written.  Videos already cached (same size, modification time
    and pixel size) are skipped, so the call is cheap to repeat.  Unreadable videos are skipped
    with a warning; raises :class:`DataError` when none is usable.
    """
    from tqdm.auto import tqdm

    from marlin.video import VideoError, iter_frames

    folder, cache = Path(folder), Path(cache)
    if videos is None:
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder")
        videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    videos = list(videos)
    if not videos:
        raise DataError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)}) and no preprocessed clips")
    done = 0
    for path in tqdm(videos, desc="decoding videos", disable=not progress):
        rel = path.relative_to(folder) if path.is_relative_to(folder) else Path(path.name)
        clip_id = "__".join(rel.with_suffix("").parts)
        stat = path.stat()
        stamp = {"source": str(path), "source_mtime": stat.st_mtime_ns, "source_bytes": stat.st_size}
        meta_path = cache / clip_id / "meta.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
                if old.get("size") == size and all(old.get(k) == v for k, v in stamp.items()):
                    done += 1
                    continue
            except json.JSONDecodeError:
                pass
        try:
            frames = np.stack([_square_resize(f.image, size) for f in iter_frames(path, fps=25)])
        except (VideoError, ValueError) as e:
            log.warning("skipping %s: %s", path, e)
            continue
        write_clip(cache, clip_id, frames, meta={**stamp, "fps": 25, "identity": clip_id})
        done += 1
    if not done:
        raise DataError(f"{folder}: none of {len(videos)} videos could be read")
    return cache
