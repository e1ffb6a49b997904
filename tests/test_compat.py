"""lipsync.compat: torchvision importable even when its compiled ops do not match torch."""

import subprocess
import sys

import torch

from lipsync.compat import nms_reference


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_import_torchvision_and_metric_packages():
    out = _run(
        "from lipsync.compat import import_torchvision, shim_active\n"
        "tv = import_torchvision()\n"
        "import lpips, pytorch_fid.inception\n"
        "import torchvision.models as m\n"
        "net = m.alexnet(weights=None)\n"
        "print('ok', tv.__version__, shim_active())\n"
    )
    assert out.startswith("ok ")


def test_shim_only_when_needed():
    # Whether the shim is active must agree with whether a plain import fails.
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    plain_ok = plain.returncode == 0
    if not plain_ok:
        assert "does not exist" in plain.stderr
    out = _run("from lipsync.compat import import_torchvision, shim_active\n"
               "import_torchvision()\nprint(shim_active())")
    assert out.strip() == str(not plain_ok)


def test_nms_reference_matches_greedy_definition():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    keep = nms_reference(boxes, scores, 0.5)
    # box 3 (0.95) wins, suppresses 0 (IoU 0.9) and 1 (IoU ~0.6); box 2 does not overlap.
    assert keep.tolist() == [3, 2]
    assert nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
