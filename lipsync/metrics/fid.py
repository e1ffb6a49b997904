"""FID: Fréchet distance between InceptionV3 pool features of generated and reference frames.

The network is pytorch-fid's ``InceptionV3`` (the TensorFlow FID Inception ported to PyTorch),
built without any download: its weights come from the user's ``pt_inception-2015-12-05-*.pth``
file (see :mod:`lipsync.metrics.weights`), or stay randomly initialised for tests. Frames go in
as pytorch-fid feeds its PNG/JPG files: RGB scaled to [0, 1]; the network resizes to 299x299
(bilinear) and rescales to [-1, 1] itself. Features are the 2048-d final average pool.

Statistics are accumulated in float64 one batch at a time (memory stays at one 2048 x 2048
matrix whatever the number of frames); the covariance uses the N - 1 denominator, as
``numpy.cov`` does in pytorch-fid. The trace of the matrix square root is taken from symmetric
eigendecompositions (same value as pytorch-fid's ``scipy.linalg.sqrtm``, about 20x faster);
``method="sqrtm"`` runs pytorch-fid's procedure instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

log = logging.getLogger(__name__)

FID_DIMS = 2048


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding
    errors in the eigenvalues are clipped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(
    sigma1: np.ndarray, sigma2: np.ndarray, method: str = "eigh", eps: float = 1e-6
) -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for covariance matrices.

    ``"eigh"`` (default): ``sum(sqrt(eig(A sigma2 A)))`` with ``A = sqrtm(sigma1)``, symmetric
    eigendecompositions only; equal to the other form for PSD matrices (the products are similar
    matrices) and some 20x faster at 2048 x 2048. ``"sqrtm"``: pytorch-fid's procedure, scipy's
    general ``sqrtm`` of the product; ``eps * I`` is added to both covariances when the root is
    not finite, and the real part is kept.
    """
    if method == "eigh":
        a = _sqrt_psd(sigma1)
        w = np.linalg.eigvalsh(a @ sigma2 @ a)
        return float(np.sqrt(np.clip(w, 0, None)).sum())
    if method != "sqrtm":
        raise ValueError(f"unknown method {method!r}; choose 'eigh' or 'sqrtm'")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals", stacklevel=3)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            raise ValueError(f"FID: matrix square root has a large imaginary component ({imag:.3g})")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "eigh"
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))``; see
    :func:`trace_sqrt_product` for ``method``. With fewer samples than dimensions the
    covariances are singular; "eigh" then needs no regularisation, and differs from pytorch-fid's
    ``eps``-regularised value by O(sqrt(eps)) per dimension.

    Parameters
    ----------
    mu1, mu2 : (D,) means
    sigma1, sigma2 : (D, D) covariances

    Returns
    -------
    float, >= 0 up to rounding
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"inconsistent Gaussian shapes: mu {mu1.shape} / {mu2.shape}, "
            f"sigma {sigma1.shape} / {sigma2.shape}"
        )
    diff = mu1 - mu2
    tr = trace_sqrt_product(sigma1, sigma2, method)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr)


class ActivationStats:
    """Running mean and covariance of feature vectors, fed one batch at a time.

    Accumulates shifted sums in float64 (shift = the first batch's mean) so the covariance stays
    accurate for large counts.
    """

    def __init__(self, dims: int = FID_DIMS) -> None:
        self.dims = dims
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum = np.zeros(dims)
        self._outer = np.zeros((dims, dims))

    def update(self, acts: np.ndarray | torch.Tensor) -> None:
        """Add (B, dims) activations."""
        a = np.asarray(torch.as_tensor(acts).detach().cpu().double()).reshape(-1, self.dims)
        if len(a) == 0:
            return
        if self._shift is None:
            self._shift = a.mean(0)
        a = a - self._shift
        self.count += len(a)
        self._sum += a.sum(0)
        self._outer += a.T @ a

    def merge(self, other: ActivationStats) -> None:
        """Add another accumulator's samples to this one."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self._shift = other.count, other._shift
            self._sum, self._outer = other._sum.copy(), other._outer.copy()
            return
        d = other._shift - self._shift  # re-express other's sums around our shift
        s = other._sum + other.count * d
        self._outer += (
            other._outer + np.outer(other._sum, d) + np.outer(d, other._sum) + other.count * np.outer(d, d)
        )
        self._sum += s
        self.count += other.count

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no activations accumulated")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        m = self._sum / self.count
        return (self._outer - self.count * np.outer(m, m)) / (self.count - 1)


def fid_from_stats(a: ActivationStats, b: ActivationStats, method: str = "eigh") -> float:
    """FID between two accumulated activation sets (see :func:`frechet_distance`)."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, method)


@contextlib.contextmanager
def _no_download(module):
    """Replace pytorch-fid's downloader with one that refuses, whatever it is asked."""

    def refuse(url, *args, **kwargs):
        raise RuntimeError(f"refusing to download {url}: pass the FID Inception weights file instead")

    saved = module.load_state_dict_from_url
    module.load_state_dict_from_url = refuse
    try:
        yield
    finally:
        module.load_state_dict_from_url = saved


def _fid_inception_body(inception_module):
    """pytorch-fid's FID variant of torchvision's Inception v3, randomly initialised, no weights loaded."""
    m = inception_module
    net = m._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = m.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = m.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = m.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = m.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = m.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = m.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = m.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = m.FIDInceptionE_1(1280)
    net.Mixed_7c = m.FIDInceptionE_2(2048)
    return net


def build_inception(weights: str | Path | None, seed: int = 0) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` (2048-d pool output) with weights from a local file.

    Parameters
    ----------
    weights : path of pt_inception-2015-12-05-6726825d.pth (a plain state dict of the FID
        Inception, as pytorch-fid releases it); None gives random weights (tests only: the
        numbers are then not FID)
    seed : seeds the random initialisation when ``weights`` is None

    Raises
    ------
    ValueError naming the file when its keys do not fit the network.
    """
    from lipsync.compat import import_torchvision

    import_torchvision()
    import pytorch_fid.inception as pfi

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            body = _fid_inception_body(pfi)
            if weights is None:  # He init keeps activations O(1) through the 48 layers
                for mod in body.modules():
                    if isinstance(mod, torch.nn.Conv2d):
                        torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            else:
                state = torch.load(str(weights), map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
                try:
                    body.load_state_dict(state)
                except RuntimeError as e:
                    first = str(e).strip().splitlines()[0]
                    raise ValueError(f"{weights}: not pytorch-fid Inception weights ({first})") from e
            saved = pfi.fid_inception_v3
            pfi.fid_inception_v3 = lambda: body
            try:
                with _no_download(pfi):
                    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]])
            finally:
                pfi.fid_inception_v3 = saved
    return model.eval()


class FIDExtractor:
    """Inception pool features of RGB frames, device-agnostic.

    Parameters
    ----------
    weights : FID Inception weights file, or None for random weights (tests)
    device : torch device; default CUDA when available
    batch_size : frames per forward pass
    """

    def __init__(
        self, weights: str | Path | None, device: str | torch.device | None = None, batch_size: int = 32
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = build_inception(weights).to(self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def activations(self, frames: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB frames -> (B, 2048) float64 pool features."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, H, W, 3) RGB; got {frames.shape}")
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch_size])).to(self.device)
            x = x.permute(0, 3, 1, 2).float() / 255.0
            out.append(self.model(x)[0].flatten(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FID_DIMS))

    def update(self, stats: ActivationStats, frames: np.ndarray) -> None:
        """Add the features of (B, H, W, 3) uint8 RGB frames to ``stats``."""
        stats.update(self.activations(frames))
