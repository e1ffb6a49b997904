"""The evaluation run behind ``python -m lipsync.evaluate``: loaded networks, per-video passes, FID.

:class:`Evaluator` takes the CLI's parsed arguments, loads every metric it can (a metric whose
weight file is missing or unreadable is dropped with a one-line notice), scores one video at a
time (:meth:`Evaluator.score` returns its result row) and finally the set-level FID. Face boxes
found in one pass over a video are reused by its other passes.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import clips
from .weights import MissingWeights, resolve

log = logging.getLogger(__name__)

PAIR_METRICS = ("lpips", "ssim", "psnr")
CHUNK = 16  # frame pairs per metric batch


class DeviceError(ValueError):
    """An unusable ``--device`` value."""


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"invalid --device {name!r} ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: CUDA is not available here")
    return name


class Evaluator:
    """Holds the loaded networks and the FID statistics while videos are scored one by one."""

    def __init__(self, args: argparse.Namespace, metrics: list[str], notices: list[str]) -> None:
        self.args, self.notices = args, notices
        self.device = _device(args.device)
        self.metrics = [m for m in metrics if self._prepare(m)]
        self._detector = None
        self.boxes: dict = {}  # face boxes per (video, fps), shared by the passes over one video

    def _skip(self, metric: str, reason: str) -> bool:
        self.notices.append(f"{reason}; skipping {metric}")
        return False

    def _prepare(self, metric: str) -> bool:
        a = self.args
        try:
            if metric == "lse":
                from lipsync.checkpoints import CheckpointError, load

                try:
                    self.syncnet = load(
                        resolve("syncnet_v2", a.syncnet_v2), self.device, kind="syncnet_v2"
                    ).model
                except CheckpointError as e:
                    return self._skip(metric, str(e))
            elif metric == "expert":
                from lipsync.checkpoints import CheckpointError
                from lipsync.metrics.expert import load_expert

                try:
                    self.expert = load_expert(resolve("sync_expert", a.sync_expert), self.device)
                except CheckpointError as e:
                    return self._skip(metric, str(e))
            elif metric == "fid":
                from lipsync.metrics.fid import ActivationStats, FIDExtractor

                try:
                    self.fid = FIDExtractor(resolve("fid_inception", a.fid_weights), self.device)
                except ValueError as e:
                    return self._skip(metric, str(e))
                self.fid_gen, self.fid_ref = ActivationStats(), ActivationStats()
            elif metric == "lpips":
                from lipsync.metrics.perceptual import LPIPSMetric

                try:
                    self.lpips = LPIPSMetric(
                        a.lpips_net,
                        resolve(f"lpips_{a.lpips_net}", a.lpips_weights),
                        a.lpips_lin,
                        self.device,
                    )
                except (ValueError, OSError) as e:
                    return self._skip(metric, str(e).splitlines()[0])
        except MissingWeights as e:
            return self._skip(metric, str(e))
        return True

    @property
    def detector(self):
        if self._detector is None:
            from marlin.face import FaceDetector

            self._detector = FaceDetector(self.args.detector)
        return self._detector

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()

    def score(self, video: Path, ref: Path | None) -> dict[str, Any]:
        """One result row; a failing metric leaves its cells empty and notes the reason."""
        row: dict[str, Any] = {"video": str(video), "reference": str(ref) if ref else None, "errors": []}
        steps = [("lse", self._lse), ("expert", self._expert)]
        for name, step in steps:
            if name in self.metrics:
                self._guard(row, name, step, video)
        if ref is not None and any(m in self.metrics for m in ("fid", *PAIR_METRICS)):
            self._guard(row, "pairs", self._pairs, video, ref)
        elif "fid" in self.metrics:
            self._guard(row, "fid", self._fid_only, video, self.fid_gen)
        self.boxes.clear()
        return row

    @staticmethod
    def _guard(row: dict[str, Any], name: str, fn, *args) -> None:
        try:
            row.update(fn(*args))
        except Exception as e:  # one bad file must not stop the batch
            log.debug("%s failed on %s", name, args[0], exc_info=True)
            row["errors"].append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    def _lse(self, video: Path) -> dict[str, Any]:
        from lipsync.metrics.lse import score_video

        det = self.detector if self.args.lse_mode == "wild" else None
        score, _, frames = score_video(
            self.syncnet,
            video,
            self.args.lse_mode,
            det,
            batch_size=self.args.batch_size,
            device=self.device,
            cache=self.boxes,
        )
        return {"lse_d": score.lse_d, "lse_c": score.lse_c, "av_offset": score.offset, "lse_frames": frames}

    def _expert(self, video: Path) -> dict[str, Any]:
        from lipsync.metrics.expert import expert_score_video

        value, n = expert_score_video(self.expert, video, self.detector, device=self.device, cache=self.boxes)
        return {"expert_sync": value, "expert_windows": n}

    def _fid_only(self, video: Path, stats) -> dict[str, Any]:
        det = self.detector if self.args.region == "face" else None
        chunk: list[np.ndarray] = []
        for img in clips.region_frames(video, self.args.region, self.args.crop_size, det, self.boxes):
            chunk.append(img)
            if len(chunk) == CHUNK:
                self.fid.update(stats, np.stack(chunk))
                chunk = []
        if chunk:
            self.fid.update(stats, np.stack(chunk))
        return {}

    def _pairs(self, video: Path, ref: Path) -> dict[str, Any]:
        from lipsync.metrics.perceptual import psnr, ssim

        det = self.detector if self.args.region == "face" else None
        vals: dict[str, list[np.ndarray]] = {m: [] for m in PAIR_METRICS if m in self.metrics}
        n = 0

        def run(gen: np.ndarray, refs: np.ndarray) -> None:
            if "fid" in self.metrics:
                self.fid.update(self.fid_gen, gen)
                self.fid.update(self.fid_ref, refs)
            if "lpips" in vals:
                vals["lpips"].append(self.lpips(gen, refs))
            if "ssim" in vals:
                vals["ssim"].append(ssim(gen, refs))
            if "psnr" in vals:
                vals["psnr"].append(psnr(gen, refs))

        gens, refs = [], []
        for g, r in clips.frame_pairs(video, ref, self.args.region, self.args.crop_size, det, self.boxes):
            gens.append(g)
            refs.append(r)
            n += 1
            if len(gens) == CHUNK:
                run(np.stack(gens), np.stack(refs))
                gens, refs = [], []
        if gens:
            run(np.stack(gens), np.stack(refs))
        if n == 0:
            raise ValueError("no aligned frame pairs (no face in the reference?)")
        out: dict[str, Any] = {k: float(np.concatenate(v).mean()) for k, v in vals.items()}
        if vals:
            out["pairs"] = n
        return out

    def fid_result(self, extra_refs: Iterable[Path]) -> dict[str, Any] | None:
        """Add unmatched reference videos to the reference set and compute the set-level FID."""
        if "fid" not in self.metrics:
            return None
        from lipsync.metrics.fid import fid_from_stats

        for ref in extra_refs:
            try:
                self._fid_only(ref, self.fid_ref)
            except Exception as e:
                self.notices.append(f"{ref}: left out of the FID reference set ({str(e).splitlines()[0]})")
        res = {
            "region": self.args.region,
            "generated_frames": self.fid_gen.count,
            "reference_frames": self.fid_ref.count,
            "fid": None,
        }
        if self.fid_gen.count < 2 or self.fid_ref.count < 2:
            self.notices.append("FID needs at least 2 frames on each side; not computed")
            return res
        res["fid"] = fid_from_stats(self.fid_gen, self.fid_ref)
        return res
