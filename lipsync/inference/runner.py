"""Run a lip-sync generator on batches of face crops: numpy in, numpy out.

Works for every generator of ``lipsync.models`` (the interface of ``docs/usage/models.md``):
``generator(faces, mels)`` with faces (B, 6, T, S, S) RGB in [0, 1] (masked target + reference)
and mels (B, T, 1, 80, 16).  ``T`` is the generator's ``frames_per_window`` (1 for Wav2Lip,
16 for the MARLIN-conditioned generator); a MARLIN generator's encoder is run as its own step
(``generator.encode``) so its time is reported separately.
"""

from __future__ import annotations

import copy
import logging
import threading
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


# "auto" keeps a reduced precision only if, on the first batch of real faces, at most AUTO_SHARE of
# the output values are more than AUTO_LEVELS 8-bit levels from fp32.  Judged on the user's own
# faces rather than a made-up batch: on uniform noise the shipped default in bf16 has 10% of its
# values more than 2 levels off, on face crops 0.6%, and a dub in bf16 scores as fp32 does
# (docs/usage/infer.md).  A share rather than the single worst value: a broken kernel or an
# overflow moves whole regions, rounding moves a few scattered pixels.
AUTO_LEVELS = 3
AUTO_SHARE = 0.01


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
        bf16 (AVX-512 BF16 / AMX), fp32 otherwise.  With "auto" the reduced precision must run
        and agree with fp32 on the first batch of faces: that batch is made in both, its fp32
        faces are returned, and the reduced precision is kept for the rest only if at most
        ``AUTO_SHARE`` of its values are more than ``AUTO_LEVELS`` levels off.  ``dtype`` is the
        precision in use (fp32 until that batch).
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
        self._name = type(model).__name__
        self._trial: tuple[torch.dtype, nn.Module] | None = None  # "auto"'s candidate, until judged
        self._lock = threading.Lock()  # one judgement even if several threads share the runner
        if precision != "auto":
            self.dtype = resolve_dtype(precision, device)
            self.model = _prepare(model, self.dtype, optimize)
            return
        fast = {"cuda": torch.float16, "cpu": torch.bfloat16 if _bf16_on_cpu() else None}.get(device.type)
        self.dtype, self.model = torch.float32, _prepare(model, torch.float32, optimize)
        if fast is not None:
            self._trial = self._candidate(model, fast, optimize)

    def _candidate(self, model: nn.Module, dtype: torch.dtype,
                   optimize: bool) -> tuple[torch.dtype, nn.Module] | None:
        """``model`` prepared in ``dtype``, else None.  Whether it runs there is learnt on the
        first batch (``_judge``): a pass on a blank batch here would cost a clip a tenth of a second."""
        try:
            # a copy: without optimize, _prepare converts in place, and self.model may be `model`
            return dtype, _prepare(copy.deepcopy(model) if not optimize else model, dtype, optimize)
        except (RuntimeError, NotImplementedError, TypeError) as e:
            log.info("%s cannot be converted to %s here (%s); using fp32", self._name, dtype, e)
            return None

    def _blank(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.window
        return np.zeros((n, self.size, self.size, 3), np.uint8), np.zeros((n, 80, 16), np.float32)

    def _run_trial(self, args: tuple) -> np.ndarray | None:
        """The candidate's faces for ``_generate``'s ``args``; None, and the candidate dropped,
        if it does not run on them."""
        dtype, trial = self._trial
        try:
            return self._generate(trial, dtype, *args)
        except (RuntimeError, NotImplementedError, TypeError) as e:
            log.info("%s does not run in %s here (%s); using fp32", self._name, dtype, e)
            self._trial = None
            return None

    def _judge(self, fp32_faces: np.ndarray, args: tuple) -> None:
        """Keep the candidate precision if it makes ``fp32_faces`` within the AUTO_ limits."""
        faces = self._run_trial(args)
        if faces is None:
            return
        dtype, trial = self._trial
        self._trial = None
        off = np.abs(faces.astype(np.int16) - fp32_faces)
        share = float((off > AUTO_LEVELS).mean())
        verdict = (f"{share:.2%} of the first {len(faces)} faces' values more than {AUTO_LEVELS} "
                   f"levels from fp32 (max {int(off.max())})")
        if share <= AUTO_SHARE:
            self.dtype, self.model = dtype, trial
            log.info("running %s in %s: %s", self._name, dtype, verdict)
        else:
            log.info("%s stays in fp32: in %s, %s", self._name, dtype, verdict)

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
        args = (crops, mels, times, openings, geometry)
        if self._trial is None:
            return self._generate(self.model, self.dtype, *args)
        with self._lock:
            faces = self._generate(self.model, self.dtype, *args)
            if self._trial is not None:
                self._judge(faces, args)
        return faces

    @torch.inference_mode()
    def _generate(self, model: nn.Module, dtype: torch.dtype, crops: np.ndarray, mels: np.ndarray,
                  times: StageTimes | None = None, openings: np.ndarray | None = None,
                  geometry: np.ndarray | None = None) -> np.ndarray:
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
        reference, extra = inference_reference(model, x, known, self.window, where)
        faces = torch.cat([masked, reference], dim=1)  # (N, 6, S, S)
        kwargs = {k: v.to(self.device) for k, v in extra.items()}
        m = torch.from_numpy(np.ascontiguousarray(mels, np.float32)).to(self.device).unsqueeze(1)
        b, t = n // self.window, self.window
        faces, m = faces.to(dtype), m.to(dtype)
        if t > 1:
            faces = faces.view(b, t, 6, s, s).permute(0, 2, 1, 3, 4)  # (B, 6, T, S, S)
            m = m.view(b, t, 1, 80, 16)
            if self.has_encoder:
                kwargs["tokens"] = model.encode(faces, rest=kwargs.get("rest"))
                if times is not None:
                    _sync(self.device)
                    t1 = time.perf_counter()
                    times.marlin += t1 - t0
                    t0 = t1
        out = model(faces, m, **kwargs)
        if t > 1:
            out = out.permute(0, 2, 1, 3, 4).reshape(n, 3, s, s)
        out = out.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
        result = out.cpu().numpy()
        if times is not None:
            times.generate += time.perf_counter() - t0
        return result

    def warmup(self) -> None:
        """One tiny forward pass (cuDNN autotuning, lazy init) so timings exclude it; with "auto"
        still to judge, through the candidate precision too (dropped if it does not run)."""
        self._generate(self.model, self.dtype, *self._blank())
        with self._lock:
            if self._trial is not None:
                self._run_trial(self._blank())
