"""What ``lipsync.preprocess`` reads and how its clips are split.

- :func:`find_sources`: the inputs under a folder (videos, searched recursively, and Wav2Lip-layout
  frame folders), a single video, or a file list; each with a clip id and an identity (the
  folder above it, or a ``lipsync.data.synthetic`` ``manifest.json`` identity).
- :func:`write_split`: ``train.txt`` / ``val.txt`` by identity, deterministic (CRC32 order).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from marlin.data import VIDEO_SUFFIXES, DataError, list_clips
from marlin.train_state import atomic_write

__all__ = ["Source", "SourceResult", "IMAGE_SUFFIXES", "find_sources", "write_split"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Source:
    """One input: a video file or a Wav2Lip-layout frame folder."""

    path: Path
    clip_id: str
    identity: str
    kind: str  # "video" or "frames"


@dataclass
class SourceResult:
    """What became of one source: clip ids written, or the reason it was skipped."""

    source: str
    clips: list[str] = field(default_factory=list)
    reason: str | None = None  # one of REASONS when skipped
    detail: str = ""
    reused: bool = False  # done by an earlier run



def _is_frame_dir(path: Path) -> bool:
    return (path / "audio.wav").is_file() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def _manifest_identities(folder: Path) -> dict[str, str]:
    """Video file name -> identity from a ``lipsync.data.synthetic`` manifest.json, if any."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
        return {c["video"]: f"id{c['identity']}" for c in data.get("clips", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _source(path: Path, base: Path, kind: str, manifests: dict[Path, dict[str, str]]) -> Source:
    rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    parts = rel.with_suffix("").parts if kind == "video" else rel.parts
    clip_id = "__".join(parts) or path.stem
    if path.parent not in manifests:
        manifests[path.parent] = _manifest_identities(path.parent)
    identity = manifests[path.parent].get(path.name)
    if identity is None:  # the folder above the clip names the speaker / source video, when nested
        identity = rel.parent.name if len(rel.parts) > 1 else clip_id
    return Source(path, clip_id, identity, kind)


def find_sources(input: str | Path, root: str | Path | None = None
                 ) -> tuple[list[Source], list[SourceResult]]:
    """Sources under a folder, a single video, or listed in a file list.

    Returns the sources and ``unreadable`` results for list entries that do not exist.
    Raises :class:`DataError` when ``input`` does not exist or holds nothing usable.
    """
    input = Path(input)
    manifests: dict[Path, dict[str, str]] = {}
    missing: list[SourceResult] = []
    if not input.exists():
        raise DataError(f"{input}: no such file or folder")
    if input.is_file() and input.suffix.lower() in VIDEO_SUFFIXES:
        return [_source(input, input.parent, "video", manifests)], []
    if input.is_file():
        base = Path(root) if root is not None else input.parent
        sources = []
        for line in input.read_text(errors="replace").splitlines():
            entry = line.split()[0] if line.strip() else ""
            if not entry or entry.startswith("#"):
                continue
            path = Path(entry) if Path(entry).is_absolute() else base / entry
            if path.is_dir() and _is_frame_dir(path):
                sources.append(_source(path, base, "frames", manifests))
            elif path.is_file() or path.with_name(path.name + ".mp4").is_file():
                path = path if path.is_file() else path.with_name(path.name + ".mp4")
                sources.append(_source(path, base, "video", manifests))
            else:
                missing.append(SourceResult(str(path), reason="unreadable",
                                            detail="no such video or frame folder"))
        if not sources and not missing:
            raise DataError(f"{input}: the file list names no videos")
        return sources, missing
    sources, frame_dirs = [], set()
    for path in sorted(input.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(input).parts):
            continue
        if path.is_dir() and _is_frame_dir(path):
            sources.append(_source(path, input, "frames", manifests))
            frame_dirs.add(path)
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and frame_dirs.isdisjoint(path.parents):
            sources.append(_source(path, input, "video", manifests))
    if not sources:
        raise DataError(f"{input}: no videos ({', '.join(VIDEO_SUFFIXES)}) and no Wav2Lip frame folders")
    return sources, missing



def _order(name: str) -> tuple[int, str]:
    return zlib.crc32(name.encode()), name


def write_split(out: str | Path, val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Write ``train.txt`` / ``val.txt`` for every clip in ``out``; returns (train, val).

    Identities (``meta.json``) are ordered by a CRC32 of their name and the first
    ``ceil(val_fraction * n)`` go to val, keeping at least one for training.  With one identity
    the clips are split the same way, so a single speaker still gets a val set.
    """
    out = Path(out)
    groups: dict[str, list[str]] = {}
    for cid in list_clips(out):
        ident = json.loads((out / cid / "meta.json").read_text()).get("identity") or cid
        groups.setdefault(str(ident), []).append(cid)
    if len(groups) == 1:
        groups = {c: [c] for c in next(iter(groups.values()))}
    names = sorted(groups, key=_order)
    n_val = min(len(names) - 1, math.ceil(val_fraction * len(names))) if val_fraction > 0 else 0
    val = sorted(c for g in names[:n_val] for c in groups[g])
    train = sorted(c for g in names[n_val:] for c in groups[g])
    for name, ids in (("train.txt", train), ("val.txt", val)):
        atomic_write(out / name, lambda f, ids=ids: f.write("".join(f"{c}\n" for c in ids).encode()))
    return train, val

