"""Make clips on disk: one short clip for tests (``make_clip``) or a data set (``generate``)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .clip import FORMAT, ClipFiles, read_sidecar, sample_clip_spec, synthesize_clip, write_clip

__all__ = ["clip_seed", "generate", "make_clip"]

log = logging.getLogger(__name__)


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip ``index`` in a data set generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def make_clip(
    out_dir: str | Path,
    seed: int = 0,
    duration: float = 2.0,
    size: tuple[int, int] = (256, 256),
    fps: int = 25,
    photo_fraction: float = 0.2,
    name: str | None = None,
    identity_seed: int | None = None,
) -> ClipFiles:
    """Generate and write one clip; returns its paths (``<name>.mp4``, ``.npz``, ``.json``).

    Parameters
    ----------
    out_dir : folder to write into (created if missing).
    seed : fixes everything (identity, speech, motion); the same seed gives the same clip.
    duration : clip length in seconds (speech fitted inside it).
    size : (height, width) of the video.
    fps : frame rate.
    photo_fraction : probability that the identity is a photo face rather than a drawn one.
    name : file stem, default ``clip_<seed>``.
    identity_seed : draw the identity from this seed instead (same face, other speech).

    Raises
    ------
    EspeakError : espeak-ng is not installed.
    """
    spec = sample_clip_spec(seed, duration, size, fps, photo_fraction, identity_seed)
    return write_clip(synthesize_clip(spec), out_dir, name or f"clip_{seed}")


def _one(job: tuple) -> tuple[str, int, str]:
    out_dir, name, kwargs = job
    files = make_clip(out_dir, name=name, **kwargs)
    spec, _ = read_sidecar(files.sidecar)
    return name, spec.n_frames, spec.speech.text


def generate(
    out_dir: str | Path,
    n_clips: int,
    seed: int = 0,
    min_duration: float = 2.0,
    max_duration: float = 5.0,
    size: tuple[int, int] = (256, 256),
    fps: int = 25,
    photo_fraction: float = 0.2,
    identities: int | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> list[ClipFiles]:
    """Write ``n_clips`` clips ``clip_00000`` ... into ``out_dir`` plus ``manifest.json``.

    Clip ``k`` uses seed ``clip_seed(seed, k)`` and a duration drawn from
    [min_duration, max_duration].  With ``identities`` = K, clip ``k`` shows identity
    ``k % K`` (several utterances per face); otherwise every clip has its own face.
    Clips whose sidecar already exists are kept unless ``overwrite`` (resumable).
    """
    if n_clips < 1:
        raise ValueError(f"n_clips must be >= 1, got {n_clips}")
    if not 0.2 < min_duration <= max_duration:
        raise ValueError(f"need 0.2 < min_duration <= max_duration, got {min_duration}, {max_duration}")
    if identities is not None and identities < 1:
        raise ValueError(f"identities must be >= 1, got {identities}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(n_clips - 1)))
    jobs = []
    for k in range(n_clips):
        name = f"clip_{k:0{width}d}"
        s = clip_seed(seed, k)
        if not overwrite and (out_dir / f"{name}.json").exists():
            continue
        duration = float(np.random.default_rng([s, 9]).uniform(min_duration, max_duration))
        duration = round(duration * fps) / fps
        ident = None if identities is None else clip_seed(seed + 1_000_003, k % identities)
        jobs.append(
            (
                str(out_dir),
                name,
                dict(
                    seed=s,
                    duration=duration,
                    size=tuple(size),
                    fps=fps,
                    photo_fraction=photo_fraction,
                    identity_seed=ident,
                ),
            )
        )
    bar = tqdm(total=len(jobs), desc="synthetic clips", unit="clip", disable=not progress)
    try:
        if workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for _ in pool.map(_one, jobs):
                    bar.update()
        else:
            for job in jobs:
                _one(job)
                bar.update()
    finally:
        bar.close()
    return _write_manifest(out_dir, n_clips, width, seed, identities)


def _write_manifest(
    out_dir: Path, n_clips: int, width: int, seed: int, identities: int | None
) -> list[ClipFiles]:
    files, entries = [], []
    for k in range(n_clips):
        name = f"clip_{k:0{width}d}"
        f = ClipFiles(out_dir / f"{name}.mp4", out_dir / f"{name}.npz", out_dir / f"{name}.json")
        spec, side = read_sidecar(f.sidecar)
        files.append(f)
        entries.append(
            {
                "name": name,
                "video": f.video.name,
                "track": f.track.name,
                "sidecar": f.sidecar.name,
                "n_frames": side["n_frames"],
                "identity": k % identities if identities else k,
                "kind": spec.identity.kind,
                "text": spec.speech.text,
            }
        )
    manifest = {"format": FORMAT, "seed": seed, "identities": identities, "clips": entries}
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".json", dir=out_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, out_dir / "manifest.json")
    return files
