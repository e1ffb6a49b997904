"""Frame-pair metrics: LPIPS (lpips package), SSIM and PSNR.

All take aligned frame pairs, RGB uint8 (B, H, W, 3) (generated, reference), and return one
value per pair; a clip's score is the mean over its pairs.

* PSNR: ``10 log10(255^2 / MSE)`` over all pixels and channels of a pair (scikit-image's
  ``peak_signal_noise_ratio`` with ``data_range=255``). Identical frames would give infinity;
  they count as :data:`PSNR_CAP` dB so that clip means stay finite.
* SSIM: scikit-image's ``structural_similarity`` defaults (7x7 uniform window, sample
  covariance, K1 0.01, K2 0.03, ``data_range=255``, mean over the valid region, channels
  averaged), computed in torch so it batches and runs on a GPU.
* LPIPS: the lpips package's network with the backbone (AlexNet/VGG16/SqueezeNet ImageNet
  features) from the user's torchvision weights file and the linear calibration layers that ship
  inside the lpips package (or a user file). Nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PSNR_CAP = 100.0  # dB given to identical frames
SSIM_WIN = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
LPIPS_NETS = ("alex", "vgg", "squeeze")


def _pairs(
    gen: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = (
        torch.as_tensor(np.asarray(gen) if isinstance(gen, np.ndarray) else gen),
        torch.as_tensor(np.asarray(ref) if isinstance(ref, np.ndarray) else ref),
    )
    if a.shape != b.shape or a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(
            f"frame pairs must be two (B, H, W, 3) arrays of one shape; got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    if a.ndim == 3:
        a, b = a[None], b[None]
    return a.to(dtype), b.to(a.device, dtype)


def psnr(
    gen: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, data_range: float = 255.0
) -> np.ndarray:
    """Per-pair PSNR in dB: (B,) float64 from (B, H, W, 3) frames in [0, data_range]."""
    a, b = _pairs(gen, ref)
    mse = ((a - b) ** 2).flatten(1).mean(1).cpu().numpy()
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(data_range**2 / mse)
    return np.minimum(out, PSNR_CAP)


def ssim(
    gen: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    data_range: float = 255.0,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Per-pair SSIM: (B,) float64 from (B, H, W, 3) frames (scikit-image defaults, see module doc).

    Frames must be at least 7x7. ``dtype`` float32 is faster on a GPU (differences ~1e-6).
    """
    a, b = _pairs(gen, ref, dtype)
    if min(a.shape[1:3]) < SSIM_WIN:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN}; got {tuple(a.shape[1:3])}")
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (B, 3, H, W)

    def mean(t: torch.Tensor) -> torch.Tensor:  # valid-region 7x7 box filter
        return F.avg_pool2d(t, SSIM_WIN, stride=1)

    n = SSIM_WIN * SSIM_WIN
    cov_norm = n / (n - 1)  # sample covariance
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3)).double().cpu().numpy()


def _backbone_state(raw: dict, own_keys: list[str], path: str | Path) -> dict:
    """Map a torchvision ImageNet state dict (``features.<i>.*``) or an LPIPS one (``net.slice<k>.<i>.*``)
    onto the LPIPS network's backbone keys."""
    backbone = [k for k in own_keys if k.startswith("net.")]
    if all(k in raw for k in backbone):
        return {k: raw[k] for k in backbone}
    out, missing = {}, []
    for k in backbone:
        _, _, rest = k.split(".", 2)  # net.slice3.6.weight -> 6.weight
        src = f"features.{rest}"
        if src in raw:
            out[k] = raw[src]
        else:
            missing.append(src)
    if missing:
        raise ValueError(
            f"{path}: not ImageNet backbone weights for this LPIPS net "
            f"(missing {len(missing)} keys, e.g. {missing[0]})"
        )
    return out


class LPIPSMetric:
    """LPIPS distance between frame pairs; no downloads.

    Parameters
    ----------
    net : "alex" (default, the usual LPIPS), "vgg" or "squeeze"
    backbone : torchvision ImageNet weights of that net (e.g. alexnet-owt-7be5be79.pth), or a full
        LPIPS state dict; None keeps a random backbone (tests only: the numbers are then not LPIPS)
    lin : the linear-layer weights; None uses the v0.1 file shipped inside the lpips package
    device : torch device; default CUDA when available
    seed : seeds the random backbone when ``backbone`` is None
    """

    def __init__(
        self,
        net: str = "alex",
        backbone: str | Path | None = None,
        lin: str | Path | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; choose one of {LPIPS_NETS}")
        from lipsync.compat import import_torchvision

        import_torchvision()
        import lpips

        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(seed)
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        own = list(model.state_dict())
        if lin is None:
            lin = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        lin_state = torch.load(str(lin), map_location="cpu", weights_only=True)
        lin_keys = [k for k in own if k.startswith("lin") and k.split(".")[0][3:].isdigit()]
        missing = [k for k in lin_keys if k not in lin_state]
        if missing:
            raise ValueError(f"{lin}: not LPIPS linear-layer weights for net {net!r} (missing {missing[0]})")
        state = {k: lin_state[k] for k in lin_keys}
        if backbone is not None:
            raw = torch.load(str(backbone), map_location="cpu", weights_only=True)
            state.update(_backbone_state(raw.get("state_dict", raw), own, backbone))
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise ValueError(
                f"{backbone or lin}: weights do not fit the LPIPS {net!r} network ({first})"
            ) from e
        self.net = net
        self.random_backbone = backbone is None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(
        self, gen: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, batch_size: int = 16
    ) -> np.ndarray:
        """Per-pair LPIPS: (B,) float64 from (B, H, W, 3) uint8 RGB frames (lower is closer)."""
        a, b = _pairs(gen, ref, torch.float32)
        out = []
        for i in range(0, len(a), batch_size):
            x = a[i : i + batch_size].to(self.device).permute(0, 3, 1, 2) / 127.5 - 1.0
            y = b[i : i + batch_size].to(self.device).permute(0, 3, 1, 2) / 127.5 - 1.0
            out.append(self.model(x, y).flatten().double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def mean_finite(values: list[float] | np.ndarray) -> float:
    """Mean of the finite values (NaN when there are none)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan
