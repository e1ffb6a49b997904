"""Make ``import torchvision`` work when its compiled operators do not match torch.

lpips and pytorch-fid import torchvision only for its model definitions (VGG,
AlexNet, Inception), never for its compiled detection operators.  When the
installed torchvision was built for another torch (or is a CUDA build on a
CPU-only torch), its C++ extension fails to load and ``import torchvision``
dies with ``RuntimeError: operator torchvision::nms does not exist``: its
``_meta_registrations`` module registers fake kernels for ``nms``/``qnms``
unconditionally.

``import_torchvision()`` first imports torchvision normally.  Only when that
fails in this exact way does it define the two missing operator schemas (with a
pure-torch greedy NMS behind ``torch.ops.torchvision.nms``, so the schemas are
honest) and import again.  torchvision's own compiled detection ops stay
unavailable (``torchvision.ops.nms`` still says so); the model zoo works.
Nothing in site-packages is modified, and a healthy installation is never
touched.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

import torch

log = logging.getLogger(__name__)

_SHIM_LIBRARY: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain torch.

    Parameters
    ----------
    boxes : (N, 4) float tensor, (x1, y1, x2, y2)
    scores : (N,) float tensor
    iou_threshold : boxes overlapping a kept box by more than this are dropped

    Returns
    -------
    (K,) int64 tensor of kept indices, by decreasing score (torchvision's contract).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        w = (torch.minimum(x2[idx], x2) - torch.maximum(x1[idx], x1)).clamp(min=0)
        h = (torch.minimum(y2[idx], y2) - torch.maximum(y1[idx], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[idx] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def _install_shim() -> None:
    global _SHIM_LIBRARY
    if _SHIM_LIBRARY is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl(name, nms_reference, "CompositeExplicitAutograd")
    _SHIM_LIBRARY = lib


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """Import torchvision, repairing the missing-operator failure if it happens.

    Returns the torchvision module.  Raises the original ImportError when
    torchvision is not installed at all.
    """
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "__version__"):
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e) or "does not exist" not in str(e):
            raise
        log.info("torchvision's compiled ops do not match torch %s; defining them in Python",
                 torch.__version__)
        _forget_torchvision()
        _install_shim()
        return importlib.import_module("torchvision")


def shim_active() -> bool:
    """True when ``import_torchvision`` had to define the operators itself."""
    return _SHIM_LIBRARY is not None
