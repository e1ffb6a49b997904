"""``python -m lipsync.train_syncnet``: learning, exact resume, launcher, outputs, bad input.

The release-size expert needs seconds per sample on this CPU, so the learning and resume tests
swap in a narrow network with the same interface (the release's layer pattern at 1/8 width,
registered under the ``syncnet_color`` architecture for the test); the real classes run in the
launcher test (the 16-frame MARLIN expert) and the smoke test (the release-size expert).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers_train import full_and_resumed, metrics, one_thread_fixture
from test_datasets import talking_clips
from torch import nn

from lipsync import checkpoints
from lipsync.models import SyncNetColor, SyncNetColorConfig, registry
from lipsync.models.blocks import ConvUnit, audio_encoder
from lipsync.train_syncnet import cli, main

_one_thread = one_thread_fixture()


class NarrowSyncNet(SyncNetColor):
    """``SyncNetColor`` at 1/8 width with one residual unit per stage (same inputs and outputs)."""

    def __init__(self, config: SyncNetColorConfig | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config or SyncNetColorConfig()
        self.face_encoder = nn.Sequential(
            ConvUnit(15, 8, 7, 1, 3), ConvUnit(8, 8, 5, (1, 2), 1), ConvUnit(8, 16, 3, 2, 1),
            ConvUnit(16, 32, 3, 2, 1), ConvUnit(32, 64, 3, 2, 1), ConvUnit(64, 64, 3, 2, 1),
            ConvUnit(64, 64, 3, 1, 0), ConvUnit(64, 64, 1, 1, 0))
        self.audio_encoder = audio_encoder((1, 1, 1, 1), 0.125)


@pytest.fixture
def narrow(monkeypatch):
    """Make the ``syncnet_color`` architecture the narrow network (in this process only)."""
    monkeypatch.setitem(registry.ARCHITECTURES, "syncnet_color", (NarrowSyncNet, SyncNetColorConfig))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syncdata")
    talking_clips(root, n=5, n_frames=50, size=96)
    return root


BASE = ["--cpu", "--max-offset", "15", "--min-offset", "4", "--val-samples", "16"]


def test_expert_learns_and_saves_loadable_weights(data, tmp_path, narrow):
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), *BASE, "--steps", "80", "--batch-size", "8",
                 "--lr", "3e-3", "--eval-every", "80", "--save-every", "80", "--log-every", "20"]) == 0
    m = metrics(out)
    first, last = m[(20, "train/loss")], m[(80, "train/loss")]  # means over steps 1-20 and 61-80
    print(f"train BCE {first:.3f} -> {last:.3f}; val {m[(0, 'val/loss')]:.3f} -> {m[(80, 'val/loss')]:.3f}")
    assert last < first - 0.15 and m[(80, "val/loss")] < m[(0, "val/loss")]
    assert (80, "val/accuracy") in m and (80, "samples_per_s") in m
    loaded = checkpoints.load(out / "expert.safetensors")
    assert isinstance(loaded.model, NarrowSyncNet) and loaded.meta["steps"] == 80
    assert loaded.meta["audio_convention"] == "inference" and loaded.meta["colour"] == "rgb"
    assert loaded.meta["trained_on"] == str(data) and "val_loss" in loaded.meta
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 80
    assert any((out / "tb").iterdir())


def test_resume_reproduces_uninterrupted_run(data, tmp_path, monkeypatch, narrow):
    args = ["--data", str(data), *BASE, "--steps", "5", "--batch-size", "4", "--lr", "1e-3",
            "--save-every", "2", "--log-every", "1", "--eval-every", "100"]
    import lipsync.training.single_loop as loop

    # killed while computing step 4, after the checkpoint of step 2
    full, cut = full_and_resumed(main, loop, args, tmp_path, monkeypatch, at=3)
    for step in range(1, 6):
        assert cut[(step, "train/loss")] == full[(step, "train/loss")], step
    a, b = (checkpoints.load(tmp_path / d / "expert.safetensors").model for d in ("full", "cut"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_release_size_expert_one_step(data, tmp_path):
    out = tmp_path / "big"
    assert main(["--data", str(data), "--out", str(out), *BASE, "--steps", "1", "--batch-size", "2",
                 "--val-samples", "2"]) == 0
    loaded = checkpoints.load(out / "expert.safetensors", kind="syncnet_color")
    assert type(loaded.model) is SyncNetColor


def test_marlin_expert_two_processes_through_accelerate_launch(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lipsync.train_syncnet", "--data", str(data), "--out", str(out), *BASE,
           "--model", "marlin_sync_tiny", "--set", "face_size=[24,48]", "--set", "encoder_init=random",
           "--steps", "2", "--batch-size", "2", "--val-samples", "2", "--save-every", "2", "--log-every", "1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert (2, "train/loss") in metrics(out)
    loaded = checkpoints.load(out / "expert.safetensors", kind="marlin_sync")
    assert loaded.model.config.face_size == (24, 48) and loaded.model.n_frames == 16


def test_bad_input_gives_one_line_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: --data")
    assert cli(["--data", str(data), "--out", str(tmp_path / "o"), "--set", "colour=purple", "--cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "purple" in err[0]
    assert cli(["--data", str(tmp_path), "--out", str(tmp_path / "o2"), "--cpu"]) == 2  # no clips
    assert "no preprocessed clips" in capsys.readouterr().err
