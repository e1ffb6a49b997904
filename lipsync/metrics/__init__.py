"""Evaluation metrics for generated talking-face videos.

* :mod:`~lipsync.metrics.lse`: LSE-D / LSE-C / AV offset with SyncNet v2, as the published scripts.
* :mod:`~lipsync.metrics.fid`: FID with pytorch-fid's Inception (weights from a local file).
* :mod:`~lipsync.metrics.perceptual`: LPIPS (lpips package), SSIM and PSNR on aligned frame pairs.
* :mod:`~lipsync.metrics.expert`: this project's own sync expert's score (not comparable with LSE-C).
* :mod:`~lipsync.metrics.weights`: where the third-party weight files are looked for.
* :mod:`~lipsync.metrics.clips`: video files -> the frames each metric reads.

The command line is ``python -m lipsync.evaluate``. Importing this package loads no network and
never imports torchvision (lpips / pytorch-fid are imported on first use, through
``lipsync.compat.import_torchvision``).
"""

from .expert import expert_score_video, load_expert
from .fid import ActivationStats, FIDExtractor, build_inception, fid_from_stats, frechet_distance
from .lse import (
    VSHIFT,
    LSEError,
    LSEScore,
    lse_from_distances,
    n_windows,
    offset_distances,
    score_clip,
    score_embeddings,
    score_video,
    syncnet_embeddings,
)
from .perceptual import LPIPSMetric, psnr, ssim
from .weights import WEIGHTS, MissingWeights, resolve, weights_dir

__all__ = [
    "VSHIFT",
    "WEIGHTS",
    "ActivationStats",
    "FIDExtractor",
    "LPIPSMetric",
    "LSEError",
    "LSEScore",
    "MissingWeights",
    "build_inception",
    "expert_score_video",
    "fid_from_stats",
    "frechet_distance",
    "load_expert",
    "lse_from_distances",
    "n_windows",
    "offset_distances",
    "psnr",
    "resolve",
    "score_clip",
    "score_embeddings",
    "score_video",
    "ssim",
    "syncnet_embeddings",
    "weights_dir",
]
