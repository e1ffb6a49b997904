"""The MARLIN tab's work: mask the first window of a face clip as in MARLIN pretraining, show
what the model reconstructs, and save the clip's features (:func:`marlin.extract_video`).

Outputs of :func:`explore_clip` (a :class:`MarlinResult`): a png grid *clip / masked input /
reconstruction* (every other frame), the same as an mp4, and the features as ``.npy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import tidy_message
from .config import DemoError, no_progress
from .media import label_image, resize_image, write_mp4

CELL = 160  # pixels per frame in the grid and the video (at least)


@dataclass
class MarlinResult:
    grid: str  # png: rows clip / masked input / reconstruction, every other frame
    video: str  # mp4: clip | masked | reconstruction
    features: str  # npy: (W, E) or (W, N, E) float32
    summary: dict[str, Any] = field(default_factory=dict)


def load_marlin_any(path: Path, device: Any = "cpu"):
    """A :class:`marlin.Marlin` from a MARLIN checkpoint, or the encoder (no decoder) of a
    MARLIN-conditioned lip-sync checkpoint."""
    import torch

    from marlin import Marlin

    try:
        return Marlin.from_file(path, map_location=device)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        first = tidy_message(str(e))
    from .. import checkpoints

    try:
        loaded = checkpoints.load(path)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise DemoError(f"checkpoint {path.name}: neither a MARLIN checkpoint nor a lip-sync model "
                        f"({first})") from e
    encoder, config = getattr(loaded.model, "encoder", None), getattr(loaded.model, "marlin_config", None)
    if encoder is None or config is None:
        raise DemoError(f"checkpoint {path.name}: its {type(loaded.model).__name__} has no MARLIN encoder; "
                        "choose a MARLIN checkpoint or a MARLIN-conditioned lip-sync model")
    with torch.device("meta"):
        model = Marlin(config, with_decoder=False)
    model.encoder.load_state_dict(encoder.state_dict(), assign=True)
    return model.float().to(device).eval()


def first_window(path: Path, size: int, n_frames: int, crop_face: bool, sample_rate: int
                 ) -> tuple[list[np.ndarray], list[np.ndarray] | None, int]:
    """The first ``n_frames`` sampled frames as (size, size, 3) uint8 crops (the last one repeated
    for short clips), their region label maps when ``crop_face``, and how many had a face."""
    from marlin.features import prepare_frames
    from marlin.video import iter_frames

    def centre(image: np.ndarray) -> np.ndarray:
        return prepare_frames(image[None], size)[:, 0].permute(1, 2, 0).mul(255).round().byte().numpy()

    if crop_face:
        from marlin.face import marlin_crop, region_labels, track_video

        pairs = track_video(path)
    else:
        pairs = ((frame, None) for frame in iter_frames(path))
    crops, labels, found, box, marks = [], [], 0, None, None
    try:
        for i, (frame, track) in enumerate(pairs):
            if i % sample_rate:
                continue
            if track is not None and track.found:
                box, marks, found = track.box, track.landmarks, found + 1
            if box is None:
                crops.append(centre(frame.image))
                labels.append(np.zeros((size, size), np.uint8))
            else:
                crop, where = marlin_crop(frame.image, box, size)
                crops.append(crop)
                labels.append(region_labels(None if marks is None else where.to_crop(marks), crop.shape))
            if len(crops) == n_frames:
                break
    finally:
        pairs.close()
    if not crops:
        raise DemoError(f"clip {path.name}: no frames could be decoded")
    crops += [crops[-1]] * (n_frames - len(crops))
    labels += [labels[-1]] * (n_frames - len(labels))
    return crops, (labels if crop_face else None), found


def _images(x) -> list[np.ndarray]:
    """(3, T, S, S) float in [0, 1] -> T uint8 (S, S, 3) images."""
    return list(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 3, 0).cpu().numpy())


def explore_clip(model, clip: Path, work: Path, strategy: str = "tube", mask_ratio: float = 0.75,
                 crop_face: bool = True, seed: int = 0, keep_seq: bool = False,
                 progress: Callable[..., None] | None = None) -> MarlinResult:
    """Mask the first window of ``clip``, reconstruct it (when the model has a decoder) and save
    the features of every window (``marlin.extract_video``) in ``work``."""
    import torch

    from marlin import extract_video, make_mask, patchify, unpatchify
    from marlin.video import probe

    report = progress or no_progress
    started = time.perf_counter()
    cfg = model.config
    if strategy.startswith("fasking") and not crop_face:
        raise DemoError(f"masking {strategy!r} needs face crops with landmarks: tick 'Crop the face'")
    if not 0 <= mask_ratio < 1:
        raise DemoError(f"mask ratio {mask_ratio} must be in [0, 1)")
    rate = 2 if probe(clip).n_frames >= 2 * cfg.n_frames else 1
    report(0.1, desc="reading the clip")
    crops, labels, found = first_window(clip, cfg.img_size, cfg.n_frames, crop_face, rate)
    if crop_face and found == 0:
        raise DemoError(f"clip {clip.name}: no face found in the sampled frames; untick 'Crop the face' "
                        "to use the centre of the frame")
    x = torch.from_numpy(np.stack(crops)).permute(3, 0, 1, 2).float().div(255)[None]  # (1, 3, T, S, S)
    regions = torch.from_numpy(np.stack(labels))[None] if labels is not None else None
    mask = make_mask(strategy, 1, cfg, regions=regions, generator=torch.Generator().manual_seed(seed),
                     mask_ratio=mask_ratio)
    patches = patchify(x, cfg)
    patches[~mask] = 0.5  # hidden tokens shown grey
    rows = [("clip", _images(x[0])), ("masked input", _images(unpatchify(patches, cfg)[0]))]
    summary: dict[str, Any] = {"model": cfg.name, "img_size": cfg.img_size, "n_frames": cfg.n_frames,
                               "tokens": cfg.n_tokens, "visible_tokens": int(mask.sum()),
                               "strategy": strategy, "mask_ratio": mask_ratio, "frame_step": rate,
                               "faces_in_window": found}
    if model.has_decoder:
        report(0.3, desc="reconstructing")
        recon = model.reconstruct(x.to(model.device), mask.to(model.device)).cpu()
        rows.append(("reconstruction", _images(recon[0])))
        hidden = ~mask[0]
        err = (patchify(recon, cfg)[0][hidden] - patchify(x, cfg)[0][hidden]).pow(2).mean()
        summary["masked_patch_mse"] = round(float(err), 5)
    else:
        summary["reconstruction"] = "not available: this checkpoint holds only the encoder"
    report(0.5, desc="features of every window")
    feats = extract_video(model, clip, crop_face=crop_face, keep_seq=keep_seq, batch_size=4)
    features = work / f"{clip.stem}_marlin_features.npy"
    np.save(features, feats.features.numpy().astype(np.float32))
    side = cfg.img_size * max(1, -(-CELL // cfg.img_size))

    def cell(image: np.ndarray, text: str = "") -> np.ndarray:
        big = resize_image(image, (side, side), nearest=True).copy()
        return label_image(big, text) if text else big

    strips = [[cell(f, name if k == 0 else "") for k, f in enumerate(frames[::2])] for name, frames in rows]
    grid = np.concatenate([np.concatenate(strip, axis=1) for strip in strips], axis=0)
    from PIL import Image

    grid_path = work / "marlin_grid.png"
    Image.fromarray(grid).save(grid_path)
    movie = (np.concatenate([cell(frames[t], name) for name, frames in rows], axis=1)
             for t in range(cfg.n_frames))
    video = write_mp4(movie, work / "marlin_masked_reconstruction.mp4", 8)
    summary.update(windows=len(feats), feature_shape=list(feats.features.shape),
                   window_start_s=[round(float(t), 3) for t in feats.start_times],
                   seconds=round(time.perf_counter() - started, 2))
    return MarlinResult(str(grid_path), str(video), str(features), summary)
