"""Run a lip-sync generator on batches of face crops: numpy in, numpy out.

Works for every generator of ``lipsync.models`` (the interface of ``docs/usage/models.md``):
``generator(faces, mels)`` with faces (B, 6, T, S, S) RGB in [0, 1] (masked target + reference)
and mels (B, T, 1, 80, 16).  ``T`` is the generator's ``frames_per_window`` (1 for Wav2Lip,
16 for the MARLIN-conditioned generator); a MARLIN generator's encoder is run as its own step
(``generator.encode``) so its time is reported separately.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from lipsync.models.marlin_generator import inference_reference, needs_geometry, needs_openings

from .options import StageTimes

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


AUTO_TOLERANCE = 3 / 255  # a faster dtype is used by "auto" only if it stays this close to fp32


def _bf16_on_cpu() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _prepare(model: nn.Module, dtype: torch.dtype, optimize: bool) -> nn.Module:
    if optimize:  # BatchNorm folded into the convolutions, channels-last weights, dtype
        from lipsync.models import prepare_for_inference

        return prepare_for_inference(model, dtype=dtype)
    return model.to(dtype) if dtype != torch.float32 else model


class GeneratorRunner:
    """Batched, device-agnostic inference for one generator.

    Parameters
    ----------
    model : a ``lipsync.models`` generator (``img_size``, ``frames_per_window`` attributes)
    device : where to run it
    precision : "fp32", "fp16", "bf16", or "auto": fp16 on cuda, bf16 on a cpu with native
        bf16 (AVX-512 BF16 / AMX), fp32 otherwise -- a reduced precision is kept only when it
        runs and stays within ``AUTO_TOLERANCE`` of fp32 on a test batch
    optimize : fold BatchNorm and use channels-last weights (``lipsync.models.prepare_for_inference``)
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "auto",
                 optimize: bool = True) -> None:
        from .plan import resolve_dtype

        model = model.eval().to(device)
        model.requires_grad_(False)
        self.needs_openings = needs_openings(model)  # the engine then passes the faces' mouth openings
        self.needs_geometry = needs_geometry(model)  # ... and where each crop's mouth is
        self.device = device
        self.size = int(getattr(model, "img_size", 96))
        self.window = int(getattr(model, "frames_per_window", 1))
        self.has_encoder = callable(getattr(model, "encode", None)) and self.window > 1
        if precision != "auto":
            self.dtype = resolve_dtype(precision, device)
            self.model = _prepare(model, self.dtype, optimize)
            return
        fast = {"cuda": torch.float16, "cpu": torch.bfloat16 if _bf16_on_cpu() else None}.get(device.type)
        self.dtype, self.model = torch.float32, _prepare(model, torch.float32, optimize)
        if fast is not None:
            self._try_dtype(model, fast, optimize)

    def _try_dtype(self, model: nn.Module, dtype: torch.dtype, optimize: bool) -> None:
        """Switch to ``dtype`` if the model runs in it and agrees with fp32 on a random batch."""
        g = torch.Generator().manual_seed(0)
        n = self.window
        crops = torch.randint(0, 256, (n, self.size, self.size, 3), generator=g, dtype=torch.uint8).numpy()
        mels = (torch.rand((n, 80, 16), generator=g) * 8 - 4).numpy()
        reference = self(crops, mels).astype(np.int16)
        fp32 = (self.dtype, self.model)
        try:
            self.dtype, self.model = dtype, _prepare(model, dtype, optimize)
            diff = np.abs(self(crops, mels).astype(np.int16) - reference).max() / 255
        except (RuntimeError, NotImplementedError, TypeError) as e:
            log.info("%s does not run in %s here (%s); using fp32", type(model).__name__, dtype, e)
            self.dtype, self.model = fp32
            return
        if diff > AUTO_TOLERANCE:
            log.info("%s in %s differs from fp32 by %.4f; using fp32", type(model).__name__, dtype, diff)
            self.dtype, self.model = fp32
        else:
            log.info("running %s in %s (max difference to fp32 %.4f)", type(model).__name__, dtype, diff)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, mels: np.ndarray, times: StageTimes | None = None,
                 openings: np.ndarray | None = None, geometry: np.ndarray | None = None) -> np.ndarray:
        """Generate faces for ``crops`` speaking ``mels``.

        Parameters
        ----------
        crops : (N, S, S, 3) uint8 RGB face crops, N a multiple of ``window``; consecutive
            groups of ``window`` crops form one clip
        mels : (N, 80, 16) float32 mel windows in [-4, 4], one per crop
        openings : (N,) float mouth opening of each crop's face (NaN where unknown), for a
            generator with ``reference_fill="rest"`` (each window's most closed mouth is shown in
            the reference; without them, its first frame), ``copy_gate`` (without them, no gate)
            or ``mouth_reference`` (without them, each frame's mouth counts as open as the audio asks)
        geometry : (N, 5) float, where each crop's mouth is
            (``lipsync.data.sync_measure.mouth_geometry`` of its landmarks in crop pixels, NaN
            rows where unknown), for a ``mouth_map`` generator (without it, no mouth is drawn for it)

        Returns
        -------
        (N, S, S, 3) uint8 RGB generated faces
        """
        n, s = crops.shape[0], self.size
        if crops.shape[1:] != (s, s, 3):
            raise ValueError(f"crops must be (N, {s}, {s}, 3), got {crops.shape}")
        if n % self.window or mels.shape != (n, 80, 16):
            raise ValueError(f"need N % {self.window} == 0 crops and (N, 80, 16) mels, got {crops.shape}, "
                             f"{mels.shape}")
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255)  # (N, 3, S, S)
        masked = x.clone()
        masked[:, :, s // 2:] = 0
        known = None if openings is None else torch.as_tensor(openings).float()
        where = None if geometry is None else torch.as_tensor(geometry).float()
        reference, extra = inference_reference(self.model, x, known, self.window, where)
        faces = torch.cat([masked, reference], dim=1)  # (N, 6, S, S)
        kwargs = {k: v.to(self.device) for k, v in extra.items()}
        m = torch.from_numpy(np.ascontiguousarray(mels, np.float32)).to(self.device).unsqueeze(1)
        b, t = n // self.window, self.window
        faces, m = faces.to(self.dtype), m.to(self.dtype)
        if t > 1:
            faces = faces.view(b, t, 6, s, s).permute(0, 2, 1, 3, 4)  # (B, 6, T, S, S)
            m = m.view(b, t, 1, 80, 16)
            if self.has_encoder:
                kwargs["tokens"] = self.model.encode(faces, rest=kwargs.get("rest"))
                if times is not None:
                    _sync(self.device)
                    t1 = time.perf_counter()
                    times.marlin += t1 - t0
                    t0 = t1
        out = self.model(faces, m, **kwargs)
        if t > 1:
            out = out.permute(0, 2, 1, 3, 4).reshape(n, 3, s, s)
        out = out.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
        result = out.cpu().numpy()
        if times is not None:
            times.generate += time.perf_counter() - t0
        return result

    def warmup(self) -> None:
        """One tiny forward pass (cuDNN autotuning, lazy init) so timings exclude it."""
        n = self.window
        self(np.zeros((n, self.size, self.size, 3), np.uint8), np.zeros((n, 80, 16), np.float32))
