"""``python -m lipsync.train``: L1 + sync + GAN learning, samples, exact resume, launcher, fine-tuning.

The release-size networks need seconds per step on this CPU, so most tests swap in narrow
networks with the same interfaces (the release's layer pattern at 1/8 width, registered under the
release architecture keys for the test); the real classes run in the launcher test (the MARLIN
generator) and the smoke test (the release-size Wav2Lip).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_train import full_and_resumed, metrics, one_thread_fixture
from PIL import Image
from test_datasets import talking_clips
from test_train_syncnet import NarrowSyncNet
from torch import nn

from lipsync import checkpoints
from lipsync.data.sync_measure import mouth_geometry
from lipsync.models import (
    QualityDisc,
    QualityDiscConfig,
    SyncNetColorConfig,
    Wav2Lip,
    Wav2LipConfig,
    registry,
)
from lipsync.models import marlin_generator as mg
from lipsync.models.blocks import ConvUnit, LeakyConvUnit, audio_encoder
from lipsync.models.wav2lip import _stage, _up
from lipsync.train import cli, main
from lipsync.training.generator_loop import live_fraction

_one_thread = one_thread_fixture()


class NarrowWav2Lip(Wav2Lip):
    """``Wav2Lip`` at 1/8 width with one residual unit per stage (same inputs and outputs)."""

    def __init__(self, config: Wav2LipConfig | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config or Wav2LipConfig()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvUnit(6, 4, 7, 1, 3)), _stage(4, 8, 2, 1), _stage(8, 8, 2, 1),
            _stage(8, 16, 2, 1), _stage(16, 32, 2, 1), _stage(32, 64, 2, 1),
            nn.Sequential(ConvUnit(64, 64, 3, 1, 0), ConvUnit(64, 64, 1, 1, 0))])
        self.audio_encoder = audio_encoder((1, 1, 1, 1), 0.125)  # -> 64 channels
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvUnit(64, 64, 1, 1, 0)), _up(128, 64, 0, stride=1), _up(128, 32, 0),
            _up(64, 32, 0), _up(48, 16, 0), _up(24, 16, 0), _up(24, 8, 0)])
        self.output_block = nn.Sequential(ConvUnit(12, 8, 3, 1, 1), nn.Conv2d(8, 3, 1), nn.Sigmoid())


class NarrowDisc(QualityDisc):
    """``QualityDisc`` at 1/8 width."""

    def __init__(self, config: QualityDiscConfig | None = None) -> None:
        nn.Module.__init__(self)
        self.config = config or QualityDiscConfig()
        chans = [3, 4, 8, 16, 32, 64, 64]
        blocks = [nn.Sequential(LeakyConvUnit(3, 4, 7, 1, 3))]
        for i, (cin, cout) in enumerate(zip(chans[1:], chans[2:])):
            blocks.append(nn.Sequential(LeakyConvUnit(cin, cout, 3, (1, 2) if i == 0 else 2, 1)))
        blocks.append(nn.Sequential(LeakyConvUnit(64, 64, 3, 1, 0), LeakyConvUnit(64, 64, 1, 1, 0)))
        self.face_encoder_blocks = nn.ModuleList(blocks)
        self.binary_pred = nn.Sequential(nn.Conv2d(64, 1, 1), nn.Sigmoid())


@pytest.fixture
def narrow(monkeypatch):
    """The release architectures become the narrow networks (in this process only)."""
    monkeypatch.setitem(registry.ARCHITECTURES, "wav2lip", (NarrowWav2Lip, Wav2LipConfig))
    monkeypatch.setitem(registry.ARCHITECTURES, "quality_disc", (NarrowDisc, QualityDiscConfig))
    monkeypatch.setitem(registry.ARCHITECTURES, "syncnet_color", (NarrowSyncNet, SyncNetColorConfig))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gendata")
    talking_clips(root, n=4, n_frames=40, size=96)
    return root


@pytest.fixture
def expert(tmp_path, narrow):
    """A (random) narrow expert checkpoint: enough to exercise the sync term."""
    torch.manual_seed(0)
    return checkpoints.save(tmp_path / "expert.safetensors", NarrowSyncNet())


BASE = ["--cpu", "--val-samples", "4", "--batch-size", "4"]


def test_generator_learns_with_expert_and_gan(data, expert, tmp_path, narrow):
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), *BASE, "--expert", str(expert), "--steps", "40",
                 "--lr", "3e-3", "--sync-threshold", "5", "--eval-every", "40", "--save-every", "40",
                 "--sample-every", "40", "--log-every", "10"]) == 0
    m = metrics(out)
    print(f"val L1 {m[(0, 'val/l1')]:.3f} -> {m[(40, 'val/l1')]:.3f}, PSNR {m[(0, 'val/psnr')]:.1f} -> "
          f"{m[(40, 'val/psnr')]:.1f} dB, train L1 {m[(10, 'train/l1')]:.3f} -> {m[(40, 'train/l1')]:.3f}")
    assert m[(40, "val/l1")] < 0.8 * m[(0, "val/l1")] and m[(40, "val/psnr")] > m[(0, "val/psnr")] + 1.5
    assert m[(40, "train/l1")] < 0.85 * m[(10, "train/l1")]
    assert m[(0, "sync_wt")] == pytest.approx(0.03)  # eval sync loss < threshold at step 0: switched on
    assert all((40, f"train/{k}") in m for k in ("sync", "adv", "disc", "loss")) and (40, "val/ssim") in m
    loaded = checkpoints.load(out / "generator.safetensors", kind=("wav2lip", "marlin_lip"))
    assert isinstance(loaded.model, NarrowWav2Lip) and loaded.meta["steps"] == 40
    assert loaded.meta["audio_convention"] == "inference" and loaded.meta["expert"] == str(expert)
    checkpoints.load(out / "disc.safetensors", kind="quality_disc")
    grid = np.asarray(Image.open(out / "samples" / "step_0000040.png"))
    assert grid.shape == (4 * 96, 5 * 96, 3)  # reference / masked / generated / truth, 5 frames
    with av.open(str(out / "samples" / "step_0000040.mp4")) as v:
        assert v.streams.video[0].width == 192 and len(v.streams.audio) == 1


def test_dead_discriminator_is_reported(data, tmp_path, narrow, caplog):
    """A --disc-init whose first layer is negative on every real face gets a warning naming the
    fix; a fresh one does not."""
    torch.manual_seed(3)
    fresh = NarrowDisc()
    dead = NarrowDisc()
    with torch.no_grad():
        dead.face_encoder_blocks[0][0].conv_block[0].bias.fill_(-50.0)
    faces = torch.rand(6, 3, 96, 96)
    assert live_fraction(dead, faces) == 0 and 0.1 < live_fraction(fresh, faces) < 0.9
    for name, disc in (("fresh", fresh), ("dead", dead)):
        caplog.clear()
        path = checkpoints.save(tmp_path / f"{name}.safetensors", disc)
        with caplog.at_level(logging.WARNING, logger="lipsync.training.generator_loop"):
            assert main(["--data", str(data), "--out", str(tmp_path / name), *BASE, "--steps", "1",
                         "--disc-init", str(path), "--sample-every", "0"]) == 0
        warned = any("discriminator's first layer" in r.getMessage() for r in caplog.records)
        assert warned == (name == "dead")


def test_sync_loss_waits_for_the_threshold(data, expert, tmp_path, narrow):
    out = tmp_path / "wait"
    assert main(["--data", str(data), "--out", str(out), *BASE, "--expert", str(expert), "--steps", "2",
                 "--sync-threshold", "0.01", "--disc-wt", "0", "--eval-every", "1", "--sample-every", "0",
                 "--log-every", "1"]) == 0
    m = metrics(out)
    assert m[(0, "sync_wt")] == 0 and m[(2, "sync_wt")] == 0 and (2, "train/sync") in m
    assert m[(2, "train/loss")] == pytest.approx(m[(2, "train/l1")], rel=1e-6)  # L1 only


def test_resume_reproduces_uninterrupted_run(data, expert, tmp_path, monkeypatch, narrow):
    args = ["--data", str(data), *BASE, "--expert", str(expert), "--sync-from-start", "--steps", "5",
            "--lr", "1e-3", "--save-every", "2", "--log-every", "1", "--eval-every", "100",
            "--sample-every", "0"]
    import lipsync.training.generator_loop as loop

    # killed while computing step 4, after the checkpoint of step 2
    full, cut = full_and_resumed(main, loop, args, tmp_path, monkeypatch, at=3)
    for step in range(1, 6):
        for name in ("train/l1", "train/sync", "train/adv", "train/disc"):
            assert cut[(step, name)] == full[(step, name)], (step, name)
    a, b = (checkpoints.load(tmp_path / d / "generator.safetensors").model for d in ("full", "cut"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_takes_the_new_sync_weight_and_learning_rates(data, expert, tmp_path, narrow):
    """The state records that the sync term is on; a resumed run uses its own --sync-wt and --lr."""
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), *BASE, "--expert", str(expert), "--disc-wt", "0",
            "--sync-from-start", "--eval-every", "2", "--save-every", "2", "--sample-every", "0",
            "--log-every", "1"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4", "--resume", "--sync-wt", "0.2", "--lr", "2e-5"]) == 0
    groups = torch.load(out / "state.pt", weights_only=True)["optimizers"]["generator"]["param_groups"]
    assert [g["lr"] for g in groups] == [2e-5] * len(groups)
    m = metrics(out)
    assert m[(2, "sync_wt")] == pytest.approx(0.03) and m[(4, "sync_wt")] == pytest.approx(0.2)
    for step, w in ((2, 0.03), (4, 0.2)):  # the logged loss is (1 - w) * L1 + w * sync
        want = (1 - w) * m[(step, "train/l1")] + w * m[(step, "train/sync")]
        assert m[(step, "train/loss")] == pytest.approx(want, rel=1e-4), step


def test_fine_tune_new_speaker_from_init(data, tmp_path, narrow):
    base = checkpoints.save(tmp_path / "base.safetensors", NarrowWav2Lip())
    speaker = tmp_path / "speaker"
    talking_clips(speaker, n=2, n_frames=40, size=96, seed=9)  # one person, two takes
    for cid in ("talk0", "talk1"):
        meta = speaker / cid / "meta.json"
        meta.write_text(meta.read_text().replace('"person', '"speaker'))
    out = tmp_path / "ft"
    assert main(["--data", str(speaker), "--out", str(out), "--init", str(base), *BASE, "--steps", "3",
                 "--disc-wt", "0", "--sample-every", "0"]) == 0
    tuned = checkpoints.load(out / "generator.safetensors")
    assert tuned.meta["init"] == str(base) and isinstance(tuned.model, NarrowWav2Lip)
    before = checkpoints.load(base).model.state_dict()
    assert any(not torch.equal(before[k], v) for k, v in tuned.model.state_dict().items())


def test_nonfinite_loss_stops_keeping_last_checkpoint(data, tmp_path, capsys, narrow):
    out = tmp_path / "nan"
    code = cli(["--data", str(data), "--out", str(out), *BASE, "--steps", "20", "--lr", "1e30",
                "--disc-wt", "0", "--save-every", "1", "--sample-every", "0", "--eval-every", "100"])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite loss at step" in err and str(out / "state.pt") in err
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == int(err.split("non-finite loss at step ")[1].split()[0])
    weights = state["models"]["generator"].values()
    assert all(torch.isfinite(v).all() for v in weights if v.is_floating_point())


def test_release_size_wav2lip_one_step(data, tmp_path):
    out = tmp_path / "big"
    assert main(["--data", str(data), "--out", str(out), "--cpu", "--val-samples", "1", "--batch-size", "1",
                 "--steps", "1", "--disc-wt", "0", "--sample-every", "0"]) == 0
    assert type(checkpoints.load(out / "generator.safetensors").model) is Wav2Lip


def test_marlin_generator_two_processes_through_accelerate_launch(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lipsync.train", "--data", str(data), "--out", str(out), "--cpu",
           "--model", "marlin_lip_tiny", "--set", "img_size=48", "--set", "encoder_init=random",
           "--disc-wt", "0",
           "--steps", "2", "--batch-size", "1", "--val-samples", "1", "--save-every", "2", "--log-every", "1",
           "--sample-every", "2"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert (2, "train/l1") in metrics(out)
    loaded = checkpoints.load(out / "generator.safetensors", kind="marlin_lip")
    assert loaded.model.img_size == 48 and loaded.meta["frames_per_sample"] == 16
    assert (out / "samples" / "step_0000002.png").exists()


def test_bad_input_gives_one_line_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--data", str(data), "--out", str(tmp_path / "o"), "--sync-wt", "0.5", "--disc-wt", "0.6"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: need --sync-wt")
    with pytest.raises(SystemExit):
        cli(["--data", str(data), "--out", str(tmp_path / "o"), "--expert", str(tmp_path / "none.pth")])
    assert "--expert" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert cli(["--data", str(data), "--out", str(tmp_path / "o"), "--init", str(bad), "--cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint") and "bad.pth" in err[0]


def _lips_data(tmp_path):
    """Three 40-frame 48 px clips with a lips patch in their region maps and landmarks whose lip gap
    varies from frame to frame."""
    data = tmp_path / "lips"
    talking_clips(data, n=3, n_frames=40, size=48)
    for cid in ("talk0", "talk1", "talk2"):  # region maps with a lips patch (id 5)
        regions = np.ones((40, 48, 48), np.uint8)
        regions[:, 32:40, 16:32] = 5
        np.save(data / cid / "regions.npy", regions)
        rng = np.random.default_rng(len(cid))
        np.save(data / cid / "landmarks.npy", rng.uniform(0, 48, (40, 478, 2)).astype(np.float32))
    return data


def _tiny_marlin_args(data, expert):
    return ["--data", str(data), "--cpu", "--val-samples", "1", "--batch-size", "2",
            "--model", "marlin_lip_tiny",
            "--set", "img_size=48", "--set", "encoder_init=random", "--disc-wt", "0", "--sample-every", "0",
            "--expert", str(expert), "--sync-from-start", "--log-every", "1"]


def test_marlin_generator_mouth_weight_and_partial_windows(tmp_path, expert, narrow, capsys):
    """--mouth-wt adds the lips' L1, --opening-wt the opening read-out; --train-frames decodes
    5-frame runs that the expert scores."""
    data = _lips_data(tmp_path)
    out = tmp_path / "run"
    args = _tiny_marlin_args(data, expert)
    assert main([*args, "--out", str(out), "--steps", "2", "--mouth-wt", "3", "--opening-wt", "0.5",
                 "--train-frames", "5"]) == 0
    logged = metrics(out)
    assert logged[(2, "train/mouth")] > 0 and logged[(2, "train/opening")] > 0 and (2, "train/sync") in logged
    l1, mouth, sync = logged[(2, "train/l1")], logged[(2, "train/mouth")], logged[(2, "train/sync")]
    opening = logged[(2, "train/opening")]
    # the logged loss is the documented mix:
    # (1 - sync_wt) * (L1 + mouth_wt * mouth + opening_wt * opening) + sync_wt * sync
    want = 0.97 * (l1 + 3 * mouth + 0.5 * opening) + 0.03 * sync
    assert logged[(2, "train/loss")] == pytest.approx(want, rel=1e-4)
    # the read-out head is part of the training state (exact resume), not of the generator
    state = torch.load(out / "state.pt", weights_only=True)
    assert "opening_head" in state["models"]
    saved = checkpoints.load(out / "generator.safetensors").model.state_dict()
    assert set(saved) == set(registry.create_model("marlin_lip_tiny", img_size=48).state_dict())
    # the 5-frame expert cannot score runs shorter than 5 frames; Wav2Lip has no 16-frame windows
    assert cli([*args, "--out", str(tmp_path / "short"), "--steps", "1", "--train-frames", "3"]) == 2
    assert "runs of 5 frames" in capsys.readouterr().err
    assert cli(["--data", str(data), "--out", str(tmp_path / "w"), "--cpu", "--steps", "1",
                "--train-frames", "2", "--disc-wt", "0"]) == 2
    assert "MARLIN generators" in capsys.readouterr().err


def test_init_with_set_changes_shape_free_fields_only(tmp_path):
    """--init with --set: the reference mask can be switched off for fine-tuning, weights kept."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import TrainingError, build_model

    torch.manual_seed(0)
    base = registry.create_model("marlin_lip_tiny", img_size=48)
    assert base.config.reference_mask is not None
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"reference_mask": None}, path, GENERATORS)
    assert model.config.reference_mask is None and model.config.audio_skip == base.config.audio_skip
    for (k, a), (k2, b) in zip(base.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.rand(1, 16, 1, 80, 16)
    model.eval()
    base.eval()
    ref = faces.clone()
    ref[:, 3:, :, 22:40, 12:36] = 0.5  # inside the base model's reference mask
    with torch.no_grad():
        torch.testing.assert_close(base(faces, mels), base(ref, mels))
        assert not torch.allclose(model(faces, mels), model(ref, mels))
    with pytest.raises(TrainingError, match="changes the weights.*audio_skip_proj"):
        build_model("ignored", {"audio_skip": 4}, path, GENERATORS)
    with pytest.raises(TrainingError, match="--set"):
        build_model("ignored", {"no_such_field": 1}, path, GENERATORS)


def test_init_with_set_grows_a_refiner_that_starts_neutral(tmp_path):
    """--init --set refine_channels=K adds the full-resolution refiner: same output until it trains."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import build_model

    torch.manual_seed(1)
    base = registry.create_model("marlin_lip_tiny", img_size=48).eval()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"refine_channels": 8}, path, GENERATORS)
    assert model.config.refine_channels == 8
    assert sum(p.numel() for p in model.refine.parameters()) > 0
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(faces, mels), base(faces, mels), rtol=0, atol=0)
    # the refiner trains: one step moves the output
    model.train()
    opt = torch.optim.SGD(model.refine.parameters(), lr=1.0)
    target = torch.rand(2, 3, 16, 48, 48)
    (model(faces, mels) - target).abs().mean().backward()
    assert model.refine[-1].weight.grad.abs().sum() > 0
    opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(faces, mels) - base(faces, mels)).abs().max() > 1e-4
    # saved and loaded with its refiner
    again = checkpoints.load(checkpoints.save(tmp_path / "refined.safetensors", model)).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(faces, mels), model(faces, mels))
    with pytest.raises(ValueError, match="refine_channels"):
        registry.create_model("marlin_lip_tiny", refine_channels=-1)


def test_init_with_set_grows_a_composite_head_that_starts_near_neutral(tmp_path):
    """--init --set composite=true: out = (1 - a) drawn + a reference, with a ~ 0.0025 at first."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import build_model

    torch.manual_seed(2)
    base = registry.create_model("marlin_lip_tiny", img_size=48).eval()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"composite": True, "reference_mask": None}, path, GENERATORS).eval()
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    unmasked = registry.create_model("marlin_lip_tiny", img_size=48, reference_mask=None).eval()
    unmasked.load_state_dict(base.state_dict())
    with torch.no_grad():
        drawn = unmasked(faces, mels)
        out = model(faces, mels)
        assert 0 < (out - drawn).abs().max() <= 0.003  # a = sigmoid(-6) of |reference - drawn| <= 1
        bias = model.composite.bias.clone()
        model.composite.bias.fill_(30.0)  # a = 1: the reference itself
        torch.testing.assert_close(model(faces, mels), faces[:, 3:], rtol=0, atol=1e-6)
        model.composite.bias.copy_(bias)
    # the mix trains, and survives a save and load
    model.train()
    target = faces[:, 3:].clone()
    (model(faces, mels) - target).abs().mean().backward()
    assert model.composite.bias.grad.item() < 0  # more of the reference lowers this loss
    again = checkpoints.load(checkpoints.save(tmp_path / "mixed.safetensors", model)).model.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(faces, mels), model(faces, mels))
    assert again.config.composite


def test_init_with_set_grows_a_warp_head_that_starts_as_the_identity(tmp_path):
    """--init --set warp=true on a composite generator: zero flow, the same output; then it trains."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import build_model

    torch.manual_seed(3)
    base = registry.create_model("marlin_lip_tiny", img_size=48, composite=True).eval()
    with torch.no_grad():
        base.composite.bias.fill_(0.0)  # a = 1/2: half the output is the (warped) reference
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"warp": True}, path, GENERATORS).eval()
    assert model.warp[-1].weight.abs().sum() == 0
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(faces, mels), base(faces, mels), rtol=0, atol=1e-5)
    model.train()
    (model(faces, mels) - torch.rand(2, 3, 16, 48, 48)).abs().mean().backward()
    assert model.warp[-1].weight.grad.abs().sum() > 0  # the flow gets a gradient through the sampling
    with torch.no_grad():
        model.warp[-1].bias.copy_(torch.tensor([0.0, 0.5]))  # 4 px down everywhere
    model.eval()
    again = checkpoints.load(checkpoints.save(tmp_path / "warped.safetensors", model)).model.eval()
    with torch.no_grad():
        assert (model(faces, mels) - base(faces, mels)).abs().max() > 1e-2
        torch.testing.assert_close(again(faces, mels), model(faces, mels))
    assert again.config.warp
    with pytest.raises(ValueError, match="composite"):
        registry.create_model("marlin_lip_tiny", warp=True)


def test_init_with_set_grows_a_warp_draw_path_that_starts_neutral(tmp_path):
    """--init --set warp_draw=K gives the output block the moved reference: same output at first,
    then the drawn face can take the moved reference's pixels."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import build_model

    torch.manual_seed(4)
    base = registry.create_model("marlin_lip_tiny", img_size=48, composite=True, warp=True).eval()
    with torch.no_grad():
        base.warp[-1].bias.copy_(torch.tensor([0.0, 0.25]))  # 2 px down: the moved reference differs
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"warp_draw": 8}, path, GENERATORS).eval()
    assert model.config.warp_draw == 8 and model.warp_draw[-1].weight.abs().sum() == 0
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(faces, mels), base(faces, mels), rtol=0, atol=0)
    # the path trains, and once it has weights it changes the output; saved and loaded with it
    model.train()
    (model(faces, mels) - torch.rand(2, 3, 16, 48, 48)).abs().mean().backward()
    assert model.warp_draw[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.warp_draw[-1].weight.normal_(0, 0.5)
    model.eval()
    again = checkpoints.load(checkpoints.save(tmp_path / "drawn.safetensors", model)).model.eval()
    with torch.no_grad():
        assert (model(faces, mels) - base(faces, mels)).abs().max() > 1e-3
        torch.testing.assert_close(again(faces, mels), model(faces, mels))
    assert again.config.warp_draw == 8
    with pytest.raises(ValueError, match="warp=True"):
        registry.create_model("marlin_lip_tiny", composite=True, warp_draw=8)
    with pytest.raises(ValueError, match="warp_draw"):
        registry.create_model("marlin_lip_tiny", composite=True, warp=True, warp_draw=-1)


def _train_tiny_marlin(tmp_path, expert, steps, term, weight, *extra):
    """A few steps of the tiny MARLIN generator with --mouth-wt 3 and ``term`` at ``weight``; checks
    the logged loss is the documented mix and returns the CLI args, the run folder and the term."""
    args = _tiny_marlin_args(_lips_data(tmp_path), expert)
    out = tmp_path / "run"
    assert main([*args, "--out", str(out), "--steps", str(steps), "--mouth-wt", "3", "--train-frames", "5",
                 *extra]) == 0
    logged = metrics(out)
    l1, mouth, value, sync = (logged[(steps, f"train/{k}")] for k in ("l1", "mouth", term, "sync"))
    want = 0.97 * (l1 + 3 * mouth + weight * value) + 0.03 * sync
    assert logged[(steps, "train/loss")] == pytest.approx(want, rel=1e-4)
    return args, out, value


def test_edge_loss_charges_soft_edges_inside_the_mask_only():
    """edge_loss: 0 for the truth, > 0 for a blurred copy (whose mean colours are right), and blind
    to what differs outside the lips' mask."""
    from lipsync.training.generator_loop import edge_loss

    g = torch.Generator().manual_seed(3)
    target = (torch.rand(2, 3, 4, 32, 32, generator=g) > 0.5).float()  # hard edges everywhere
    mask = torch.zeros(2, 1, 4, 32, 32)
    mask[..., 10:20, 8:24] = 1
    assert edge_loss(target, target, mask).item() == 0.0
    soft = F.avg_pool3d(target, (1, 3, 3), 1, (0, 1, 1), count_include_pad=False)
    assert edge_loss(soft, target, mask).item() > 0.1
    elsewhere = target.clone()
    elsewhere[..., :5, :] = 1 - elsewhere[..., :5, :]  # rows 0-4, away from the mask (rows 10-19)
    assert edge_loss(elsewhere, target, mask).item() == 0.0


@pytest.mark.parametrize("term", ["edge", "change"])
def test_weight_adds_its_term(tmp_path, expert, narrow, capsys, term):
    """--edge-wt (the lips' edge L1) and --change-wt (the changed pixels' L1) add their term to the
    documented mix; a negative weight is refused."""
    flag = f"--{term}-wt"
    args, _, value = _train_tiny_marlin(tmp_path, expert, 2, term, 2.0, flag, "2")
    assert value > 0
    with pytest.raises(SystemExit) as e:
        cli([*args, "--out", str(tmp_path / "neg"), "--steps", "1", flag, "-1"])
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_change_loss_charges_only_what_differs_from_the_reference():
    """change_loss: the L1 over the pixels where the target differs from the reference, at their
    own scale (not diluted by the unchanged rest), blind to errors where nothing changed, 0 when
    nothing changed at all."""
    from lipsync.training.generator_loop import CHANGE_LEVEL, change_loss

    target = torch.full((1, 3, 2, 16, 16), 0.5)
    reference = target.clone()
    reference[..., 4:8, 4:8] = 0.1  # 16 of 256 pixels per frame differ (the "mouth" to redraw)
    pred = reference.clone()  # copies the reference: wrong by 0.4 on exactly those pixels
    assert change_loss(pred, target, reference).item() == pytest.approx(0.4)
    assert change_loss(target, target, reference).item() == 0.0
    off = target.clone()
    off[..., 12:, 12:] = 0.0  # wrong where the target equals the reference
    assert change_loss(off, target, reference).item() == 0.0
    faint = target + CHANGE_LEVEL / 2  # a difference under the threshold is no change
    assert change_loss(reference, target, faint).item() == 0.0


def test_warp_weight_trains_the_flow_on_the_warped_reference(tmp_path, expert, narrow, capsys):
    """--warp-wt adds the L1 of the warped reference in the lips' region to the documented mix."""
    args, out, warp = _train_tiny_marlin(tmp_path, expert, 2, "warp", 2.0, "--set", "composite=true",
                                         "--set", "warp=true", "--warp-wt", "2")
    assert warp > 0
    flow = checkpoints.load(out / "generator.safetensors").model.warp[-1].weight
    assert flow.abs().sum() > 0  # the flow head moved from its zero start
    assert cli([*args, "--out", str(tmp_path / "plain"), "--steps", "1", "--warp-wt", "1"]) == 2
    assert "--warp-wt needs a generator with warp" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli([*args, "--out", str(tmp_path / "neg"), "--steps", "1", "--warp-wt", "-1"])
    assert e.value.code == 2 and "--warp-wt" in capsys.readouterr().err


def _wake(model, biases, faces, mels, **inputs) -> None:
    """One backward pass of an L1 through ``model`` given ``inputs``: every one of ``biases`` (grown
    at zero) gets a gradient, i.e. every decoder scale learns from the input; then random weights
    for them, as training would leave, and eval mode."""
    model.train()
    (model(faces, mels, **inputs) - torch.rand(faces.shape[0], 3, *faces.shape[2:])).abs().mean().backward()
    assert all(b.weight.grad.abs().sum() > 0 for b in biases)
    with torch.no_grad():
        for b in biases:
            b.weight.normal_()
    model.eval()


def test_init_with_set_grows_mouth_input_that_starts_neutral(tmp_path):
    """--init --set mouth_input=true: zero biases, the same output; then the measured shape (or,
    where it is unknown, the audio head's) steers every decoder scale."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import build_model

    torch.manual_seed(4)
    base = registry.create_model("marlin_lip_tiny", img_size=48).eval()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"mouth_input": True}, path, GENERATORS).eval()
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    shape = torch.stack([torch.rand(2, 16) * 0.3, 0.5 + torch.rand(2, 16) * 0.2], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(model(faces, mels), base(faces, mels), rtol=0, atol=1e-5)
        told = model(faces, mels, mouth_shape=shape)
        torch.testing.assert_close(told, base(faces, mels), rtol=0, atol=1e-5)
    _wake(model, model.mouth_bias, faces, mels, mouth_shape=shape)
    with torch.no_grad():
        told = model(faces, mels, mouth_shape=shape)
        heard = model(faces, mels)  # inference: the head's shape
        assert (told - heard).abs().max() > 1e-2
        unknown = shape.clone()
        unknown[1] = float("nan")  # the second clip has no landmarks: its frames use the head
        mixed = model(faces, mels, mouth_shape=unknown)
        torch.testing.assert_close(mixed[0], told[0])
        torch.testing.assert_close(mixed[1], heard[1])
        pick = torch.tensor([[1, 2], [5, 6]])  # decoding some frames takes their rows of the shape
        torch.testing.assert_close(model(faces, mels, frames=pick, mouth_shape=shape),
                                   torch.stack([told[0, :, 1:3], told[1, :, 5:7]]))
        again = checkpoints.load(checkpoints.save(tmp_path / "shaped.safetensors", model)).model.eval()
        torch.testing.assert_close(again(faces, mels), heard)
        with pytest.raises(ValueError, match="one \\(opening, width\\) per frame"):
            model(faces, mels, mouth_shape=shape[:, :8])
        with pytest.raises(ValueError, match="mouth_input"):
            base(faces, mels, mouth_shape=shape)


def test_mouth_reference_grows_neutral_and_tells_the_decoder_the_frames_own_opening(tmp_path):
    """--init --set mouth_reference=true starts as the generator it grew from; trained, the output
    follows reference_opening, an unknown (NaN) or missing one standing for the opening the audio
    asks for; inference passes the openings."""
    from lipsync.models import GENERATORS
    from lipsync.models.marlin_generator import MOUTH_SHAPE_MEAN, MOUTH_SHAPE_STD, inference_reference
    from lipsync.training.common import build_model

    torch.manual_seed(5)
    base = registry.create_model("marlin_lip_tiny", img_size=48, mouth_input=True).eval()
    with torch.no_grad():
        for b in base.mouth_bias:
            b.weight.normal_()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"mouth_reference": True}, path, GENERATORS).eval()
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    own = torch.rand(2, 16) * 0.4
    with torch.no_grad():
        plain = base(faces, mels)
        torch.testing.assert_close(model(faces, mels, reference_opening=own), plain, rtol=0, atol=1e-5)
    _wake(model, model.reference_bias, faces, mels, reference_opening=own)
    with torch.no_grad():
        told = model(faces, mels, reference_opening=own)
        assert (told - plain).abs().max() > 1e-2
        said = model.mouth_head(model.audio_encoder(mels.flatten(0, 1)).flatten(1))[:, 0]
        said = (said * MOUTH_SHAPE_STD[0] + MOUTH_SHAPE_MEAN[0]).reshape(2, 16)
        as_said = model(faces, mels, reference_opening=said)
        torch.testing.assert_close(model(faces, mels), as_said, rtol=1e-4, atol=1e-4)
        unknown = own.clone()
        unknown[1] = float("nan")  # the second clip's frames have no landmarks
        mixed = model(faces, mels, reference_opening=unknown)
        torch.testing.assert_close(mixed[0], told[0])
        torch.testing.assert_close(mixed[1], as_said[1], rtol=1e-4, atol=1e-4)
        pick = torch.tensor([[1, 2], [5, 6]])  # decoding some frames takes their openings
        torch.testing.assert_close(model(faces, mels, frames=pick, reference_opening=own),
                                   torch.stack([told[0, :, 1:3], told[1, :, 5:7]]))
    _, extra = inference_reference(model, torch.rand(16, 3, 48, 48), own[0], 16)
    torch.testing.assert_close(extra["reference_opening"], own[0])
    with pytest.raises(ValueError, match="mouth_input"):
        registry.create_model("marlin_lip_tiny", mouth_reference=True)


def _mouth_landmarks(cx: float, cy: float, half: float, eyes: float, tilt: float = 0.0) -> np.ndarray:
    """Face-mesh points (pixels) with the mouth corners at ``cx -/+ half`` (rotated by ``tilt``) and
    the outer eye corners ``eyes`` apart; every other point at the corners' midpoint."""
    pts = np.tile(np.array([cx, cy], np.float32), (478, 1))
    d = half * np.array([math.cos(tilt), math.sin(tilt)], np.float32)
    pts[61], pts[291] = (cx, cy) - d, (cx, cy) + d
    pts[33], pts[263] = (cx - eyes / 2, cy - 30), (cx + eyes / 2, cy - 30)
    return pts


def test_mouth_geometry_and_ellipses_place_the_lip_gap():
    """mouth_geometry: the corners' midpoint, their direction and the eye distance as fractions of
    the crop; mouth_ellipses draws the asked-for gap (channel 0) and the frame's own (channel 1)
    below the corners by GAP_DROP of the gap, as tall as the gap, nothing for unknown geometry."""
    lm = _mouth_landmarks(48, 60, 12, 40)
    geo = mouth_geometry(np.stack([lm, _mouth_landmarks(48, 60, 12, 40, tilt=math.pi / 2)]), 96)
    np.testing.assert_allclose(geo[0], [0.5, 0.625, 1.0, 0.0, 40 / 96], atol=1e-6)
    np.testing.assert_allclose(geo[1, 2:4], [0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="478, 2"):
        mouth_geometry(np.zeros((68, 2)), 96)
    size = 96
    geometry = torch.from_numpy(np.stack([geo[0], geo[0], np.full(5, np.nan, np.float32)]))
    told = torch.tensor([[0.5, 0.6], [0.0, 0.6], [0.5, 0.6]])  # opening, width (eye distances)
    maps = mg.mouth_ellipses(geometry, told, torch.tensor([0.0, 0.5, 0.0]), size)
    assert maps.shape == (3, 2, size, size) and maps.min() >= 0 and maps.max() <= 1
    gap = 0.5 * 40  # pixels
    centre_y = 60 + mg.GAP_DROP * gap

    def rows(m):  # the rows where the ellipse covers the middle column
        return torch.nonzero(m[:, 48] > 0).flatten().float()

    wide = rows(maps[0, 0])
    assert wide.min() + 0.5 == pytest.approx(centre_y - gap / 2, abs=1.5)
    assert wide.max() + 0.5 == pytest.approx(centre_y + gap / 2, abs=1.5)
    assert maps[0, 0, int(centre_y), 48] > 0.9  # its peak at the gap's centre
    half_width = mg.GAP_HALF_WIDTH * 0.6 * 40
    cols = torch.nonzero(maps[0, 0, int(centre_y)] > 0).flatten().float()
    assert cols.max() - cols.min() + 1 == pytest.approx(2 * half_width, abs=2)
    assert len(rows(maps[0, 1])) <= 3  # its own mouth is closed: a line at the corners
    torch.testing.assert_close(maps[1, 0], maps[0, 1])  # told closed, own open: the other way round
    torch.testing.assert_close(maps[1, 1], maps[0, 0])
    assert maps[2].abs().max() == 0  # no landmarks: nothing drawn


def test_mouth_map_grows_neutral_and_draws_the_shape_where_the_mouth_is(tmp_path):
    """--init --set mouth_map=true starts as the generator it grew from; trained, the output follows
    where mouth_geometry puts the mouth and the shape told; decoding some frames takes their rows;
    inference passes each frame's own geometry."""
    from lipsync.inference.runner import GeneratorRunner
    from lipsync.models import GENERATORS
    from lipsync.models.marlin_generator import inference_reference, needs_geometry
    from lipsync.training.common import build_model

    torch.manual_seed(8)
    base = registry.create_model("marlin_lip_tiny", img_size=48, mouth_input=True,
                                 mouth_reference=True).eval()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"mouth_map": True}, path, GENERATORS).eval()
    assert needs_geometry(model) and not needs_geometry(base)
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    geo = torch.from_numpy(mouth_geometry(_mouth_landmarks(24, 32, 8, 20), 48)).expand(2, 16, 5).clone()
    shape = torch.stack([torch.rand(2, 16) * 0.4, 0.5 + torch.rand(2, 16) * 0.2], dim=-1)
    with torch.no_grad():
        plain = base(faces, mels, mouth_shape=shape)
        torch.testing.assert_close(model(faces, mels, mouth_shape=shape, mouth_geometry=geo), plain,
                                   rtol=0, atol=1e-5)
    _wake(model, model.mouth_map_conv, faces, mels, mouth_shape=shape, mouth_geometry=geo)
    with torch.no_grad():  # (the pass in train mode moved BatchNorm's statistics: compare with itself)
        drawn = model(faces, mels, mouth_shape=shape, mouth_geometry=geo)
        plain = model(faces, mels, mouth_shape=shape)  # no geometry: nothing drawn
        assert (drawn - plain).abs().max() > 1e-2
        moved = geo.clone()
        moved[..., 1] -= 0.2  # the mouth placed higher up
        assert (model(faces, mels, mouth_shape=shape, mouth_geometry=moved) - drawn).abs().max() > 1e-2
        unknown = geo.clone()
        unknown[1] = float("nan")  # the second clip has no landmarks: nothing drawn for it
        mixed = model(faces, mels, mouth_shape=shape, mouth_geometry=unknown)
        torch.testing.assert_close(mixed[0], drawn[0])
        torch.testing.assert_close(mixed[1], plain[1], rtol=0, atol=1e-5)
        pick = torch.tensor([[1, 2], [5, 6]])
        torch.testing.assert_close(model(faces, mels, frames=pick, mouth_shape=shape, mouth_geometry=geo),
                                   torch.stack([drawn[0, :, 1:3], drawn[1, :, 5:7]]))
        again = checkpoints.load(checkpoints.save(tmp_path / "mapped.safetensors", model)).model.eval()
        torch.testing.assert_close(again(faces, mels, mouth_shape=shape, mouth_geometry=geo), drawn)
        with pytest.raises(ValueError, match="one row per frame"):
            model(faces, mels, mouth_geometry=geo[:, :8])
    frames = torch.rand(16, 3, 48, 48)
    _, extra = inference_reference(model, frames, None, 16, geo[0])
    torch.testing.assert_close(extra["mouth_geometry"], geo[0])
    _, extra = inference_reference(base, frames, None, 16, geo[0])
    assert "mouth_geometry" not in extra
    runner = GeneratorRunner(model, torch.device("cpu"), precision="fp32", optimize=False)
    assert runner.needs_geometry
    crops = (frames.permute(0, 2, 3, 1) * 255).byte().numpy()
    m = mels[0, :, 0].numpy()
    assert (runner(crops, m, geometry=geo[0].numpy()).astype(int)
            - runner(crops, m).astype(int)).any()
    with pytest.raises(ValueError, match="mouth_input"):
        registry.create_model("marlin_lip_tiny", mouth_map=True)


def test_mouth_teeth_grows_neutral_and_tells_the_teeth(tmp_path):
    """--init --set mouth_teeth=true starts as the generator it grew from; trained, the output
    follows the teeth told (the measured ones in training, NaN or none: teeth_head's), through a
    bias and, with mouth_map, the told gap's ellipse scaled by them."""
    from lipsync.models import GENERATORS
    from lipsync.models.marlin_generator import teeth_map, teeth_units
    from lipsync.training.common import build_model

    torch.manual_seed(9)
    base = registry.create_model("marlin_lip_tiny", img_size=48, mouth_input=True, mouth_map=True).eval()
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    model = build_model("ignored", {"mouth_teeth": True}, path, GENERATORS).eval()
    faces, mels = torch.rand(2, 6, 16, 48, 48), torch.rand(2, 16, 1, 80, 16)
    geo = torch.from_numpy(mouth_geometry(_mouth_landmarks(24, 32, 8, 20), 48)).expand(2, 16, 5).clone()
    shape = torch.stack([0.2 + torch.rand(2, 16) * 0.2, 0.5 + torch.rand(2, 16) * 0.2], dim=-1)
    teeth = torch.rand(2, 16) * 0.015
    with torch.no_grad():
        plain = base(faces, mels, mouth_shape=shape, mouth_geometry=geo)
        told = model(faces, mels, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=teeth)
        torch.testing.assert_close(told, plain, rtol=0, atol=1e-5)
    _wake(model, [*model.teeth_bias, *model.teeth_map_conv], faces, mels, mouth_shape=shape,
          mouth_geometry=geo, mouth_teeth=teeth)
    with torch.no_grad():
        told = model(faces, mels, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=teeth)
        none = model(faces, mels, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=torch.zeros(2, 16))
        assert (told - none).abs().max() > 1e-2
        said = model.teeth_head(model.audio_encoder(mels.flatten(0, 1)).flatten(1))[:, 0]
        as_said = model(faces, mels, mouth_shape=shape, mouth_geometry=geo,
                        mouth_teeth=teeth_units(said, inverse=True).reshape(2, 16))
        torch.testing.assert_close(model(faces, mels, mouth_shape=shape, mouth_geometry=geo), as_said,
                                   rtol=1e-4, atol=1e-4)
        unknown = teeth.clone()
        unknown[1] = float("nan")  # the second clip's frames have no landmarks: the head's teeth
        mixed = model(faces, mels, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=unknown)
        torch.testing.assert_close(mixed[0], told[0])
        torch.testing.assert_close(mixed[1], as_said[1], rtol=1e-4, atol=1e-4)
        pick = torch.tensor([[1, 2], [5, 6]])
        torch.testing.assert_close(
            model(faces, mels, frames=pick, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=teeth),
            torch.stack([told[0, :, 1:3], told[1, :, 5:7]]))
        again = checkpoints.load(checkpoints.save(tmp_path / "teeth.safetensors", model)).model.eval()
        kept = again(faces, mels, mouth_shape=shape, mouth_geometry=geo, mouth_teeth=teeth)
        torch.testing.assert_close(kept, told)
        with pytest.raises(ValueError, match="one value per frame"):
            model(faces, mels, mouth_teeth=teeth[:, :8])
        with pytest.raises(ValueError, match="mouth_teeth=True"):
            base(faces, mels, mouth_teeth=teeth)
    torch.testing.assert_close(teeth_map(torch.tensor([-0.01, 0.0, mg.TEETH_FULL / 2, 1.0])),
                               torch.tensor([0.0, 0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="mouth_input"):
        registry.create_model("marlin_lip_tiny", mouth_teeth=True)


def test_mouth_gain_swings_the_heads_opening_only(tmp_path):
    """mouth_gain scales the opening the head predicts (its standardised deviation from the typical
    mouth) before the decoder sees it; measured shapes and the width are used as they are."""
    from lipsync.models.marlin_generator import MarlinLipGenerator

    torch.manual_seed(5)
    plain = registry.create_model("marlin_lip_tiny", img_size=48, mouth_input=True).eval()
    with torch.no_grad():
        for b in plain.mouth_bias:
            b.weight.normal_()
    swung = MarlinLipGenerator(dataclasses.replace(plain.config, mouth_gain=2.0)).eval()
    swung.load_state_dict(plain.state_dict())
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.rand(1, 16, 1, 80, 16)
    shape = torch.stack([torch.rand(1, 16) * 0.3, 0.5 + torch.rand(1, 16) * 0.2], dim=-1)
    with torch.no_grad():
        embedding = plain.audio_encoder(mels.flatten(0, 1))
        said = plain.mouth_head(embedding.flatten(1))
        doubled = said * torch.tensor([2.0, 1.0])
        biases, opening = swung._mouth_biases(embedding, None)
        for bias, layer in zip(biases, plain.mouth_bias):
            torch.testing.assert_close(bias[:, :, 0, 0], mg.MOUTH_BIAS_GAIN * layer(doubled))
        # the opening the copy gate compares is the head's own, before the swing
        torch.testing.assert_close(opening, said[:, 0] * mg.MOUTH_SHAPE_STD[0] + mg.MOUTH_SHAPE_MEAN[0])
        assert (swung(faces, mels) - plain(faces, mels)).abs().max() > 1e-3
        told = plain(faces, mels, mouth_shape=shape)
        torch.testing.assert_close(swung(faces, mels, mouth_shape=shape), told)
        again = checkpoints.load(checkpoints.save(tmp_path / "swung.safetensors", swung)).model.eval()
        assert again.config.mouth_gain == 2.0
        torch.testing.assert_close(again(faces, mels), swung(faces, mels))
    with pytest.raises(ValueError, match="mouth_gain"):
        dataclasses.replace(plain.config, mouth_gain=0.0)


def test_copy_bias_shifts_the_mix_towards_the_reference(tmp_path):
    """copy_bias is added to the composite's logit: > 0 moves the output towards the (moved)
    reference, the drawn face and the flow unchanged; it survives a save and load."""
    from lipsync.models.marlin_generator import MarlinLipGenerator

    torch.manual_seed(6)
    plain = registry.create_model("marlin_lip_tiny", img_size=48, composite=True, reference_mask=None).eval()
    with torch.no_grad():
        plain.composite.bias.fill_(0.0)  # a = 1/2 before the bias
    biased = MarlinLipGenerator(dataclasses.replace(plain.config, copy_bias=1.0)).eval()
    biased.load_state_dict(plain.state_dict())
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.rand(1, 16, 1, 80, 16)
    reference = faces[:, 3:]
    with torch.no_grad():
        out, more = plain(faces, mels), biased(faces, mels)
        # out = drawn + a (reference - drawn): a goes from 1/2 to sigmoid(1), so the distance to the
        # reference shrinks by (1 - sigmoid(1)) / (1 - 1/2) everywhere
        ratio = (more - reference).abs().sum() / (out - reference).abs().sum()
        torch.testing.assert_close(ratio, torch.tensor(2 * (1 - torch.sigmoid(torch.tensor(1.0)).item())),
                                   rtol=1e-3, atol=1e-4)
        again = checkpoints.load(checkpoints.save(tmp_path / "biased.safetensors", biased)).model.eval()
        assert again.config.copy_bias == 1.0
        torch.testing.assert_close(again(faces, mels), more)
    with pytest.raises(ValueError, match="composite"):
        registry.create_model("marlin_lip_tiny", copy_bias=1.0)
    with pytest.raises(ValueError, match="copy_bias"):
        dataclasses.replace(plain.config, copy_bias=float("nan"))


def test_copy_gate_copies_frames_whose_own_opening_matches_the_audio(tmp_path):
    """copy_gate adds copy_gate * exp(-((said - own) / width)**2) to the mix's logit per frame:
    the full bias where the frame's measured opening equals what the audio head says, almost none
    far from it, none where it is unknown (NaN) or not given; inference passes the openings."""
    from lipsync.inference.runner import GeneratorRunner
    from lipsync.models.marlin_generator import (
        MOUTH_SHAPE_MEAN,
        MOUTH_SHAPE_STD,
        MarlinLipGenerator,
        inference_reference,
        needs_openings,
    )

    torch.manual_seed(7)
    plain = registry.create_model("marlin_lip_tiny", img_size=48, composite=True, mouth_input=True,
                                  reference_mask=None).eval()
    with torch.no_grad():
        plain.composite.bias.fill_(0.0)  # a = 1/2 without a gate
    gated = MarlinLipGenerator(dataclasses.replace(plain.config, copy_gate=2.0, copy_gate_width=0.05)).eval()
    gated.load_state_dict(plain.state_dict())
    assert needs_openings(gated) and not needs_openings(plain)
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.rand(1, 16, 1, 80, 16)
    reference = faces[:, 3:]
    with torch.no_grad():
        said = plain.mouth_head(plain.audio_encoder(mels.flatten(0, 1)).flatten(1))[:, 0]
        said = said * MOUTH_SHAPE_STD[0] + MOUTH_SHAPE_MEAN[0]  # (16,) what the head says, per frame
        own = said.clone()
        own[4:8] = float("nan")  # unknown: no gate
        own[8:12] += 0.05  # one width away: exp(-1) of the bias
        own[12:] += 1.0  # far: no gate to speak of
        out = plain(faces, mels)
        torch.testing.assert_close(gated(faces, mels), out)  # no openings given: as trained
        torch.testing.assert_close(plain(faces, mels, reference_opening=own), out)  # no gate configured
        more = gated(faces, mels, reference_opening=own[None])
        # out = drawn + a (reference - drawn): a goes from 1/2 to sigmoid(bias), so the distance to the
        # reference shrinks by 2 (1 - sigmoid(bias))
        ratio = ((more - reference).abs().sum((1, 3, 4)) / (out - reference).abs().sum((1, 3, 4)))[0]
        e = math.exp(-1.0)
        want = torch.tensor([2 * (1 - 1 / (1 + math.exp(-b))) for b in [2.0] * 4 + [0.0] * 4 + [2 * e] * 4
                             + [0.0] * 4])
        torch.testing.assert_close(ratio, want, rtol=1e-3, atol=1e-3)
        again = checkpoints.load(checkpoints.save(tmp_path / "gated.safetensors", gated)).model.eval()
        assert (again.config.copy_gate, again.config.copy_gate_width) == (2.0, 0.05)
        torch.testing.assert_close(again(faces, mels, reference_opening=own), more)
        # in train mode the mix learns without the gate
        plain.train(), gated.train()
        torch.testing.assert_close(gated(faces, mels, reference_opening=own), plain(faces, mels))
    # inference gives the gate each reference frame's opening, NaN where there are none
    _, extra = inference_reference(gated, torch.rand(16, 3, 48, 48), own, 16)
    torch.testing.assert_close(extra["reference_opening"], own, equal_nan=True)
    _, extra = inference_reference(gated, torch.rand(16, 3, 48, 48), None, 16)
    assert torch.isnan(extra["reference_opening"]).all() and "rest" not in extra
    assert GeneratorRunner(gated, torch.device("cpu"), precision="fp32", optimize=False).needs_openings
    with pytest.raises(ValueError, match="mouth_input"):
        registry.create_model("marlin_lip_tiny", composite=True, copy_gate=1.0)
    with pytest.raises(ValueError, match="copy_gate_width"):
        dataclasses.replace(gated.config, copy_gate_width=0.0)
    with pytest.raises(ValueError, match="copy_gate"):
        dataclasses.replace(gated.config, copy_gate=-1.0)
    with pytest.raises(ValueError, match="reference_opening"):
        gated(faces, mels, reference_opening=own[:8])


def test_mouth_input_trains_its_head_on_the_measured_shape(tmp_path, expert, narrow, capsys):
    """With mouth_input the opening term trains the generator's own head (opening and width);
    the decoder is given the measured shape."""
    from lipsync.models.marlin_generator import mouth_shape_units

    args, out, said = _train_tiny_marlin(tmp_path, expert, 3, "opening", 0.5, "--set", "mouth_input=true",
                                         "--opening-wt", "0.5", "--lr", "1e-2")
    assert said > 0
    model = checkpoints.load(out / "generator.safetensors").model
    assert model.config.mouth_input and all(b.weight.abs().sum() > 0 for b in model.mouth_bias)
    # the head's term is the MSE on the standardised (opening, width) of the decoded frames
    shape = mouth_shape_units(torch.tensor([[0.08, 0.62], [0.13, 0.69]]))
    torch.testing.assert_close(shape, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert cli([*args, "--out", str(tmp_path / "no_head"), "--steps", "1", "--set", "mouth_input=true"]) == 2
    assert "mouth_input needs --opening-wt > 0" in capsys.readouterr().err


def test_mouth_teeth_trains_its_head_on_the_measured_teeth(tmp_path, expert, narrow):
    """With mouth_teeth the opening term's weight also trains teeth_head on the standardised tooth
    area of the decoded frames, and the decoder is given the measured teeth."""
    from lipsync.models.marlin_generator import TEETH_MEAN, TEETH_STD, teeth_units

    out = tmp_path / "run"
    assert main([*_tiny_marlin_args(_lips_data(tmp_path), expert), "--out", str(out), "--steps", "3",
                 "--mouth-wt", "3", "--train-frames", "5", "--set", "mouth_input=true",
                 "--set", "mouth_teeth=true", "--opening-wt", "0.5", "--lr", "1e-2"]) == 0
    logged = metrics(out)
    l1, mouth, opening, teeth, sync = (logged[(3, f"train/{k}")]
                                       for k in ("l1", "mouth", "opening", "teeth", "sync"))
    assert teeth > 0
    want = 0.97 * (l1 + 3 * mouth + 0.5 * opening + 0.5 * teeth) + 0.03 * sync
    assert logged[(3, "train/loss")] == pytest.approx(want, rel=1e-4)
    model = checkpoints.load(out / "generator.safetensors").model
    assert model.config.mouth_teeth and all(b.weight.abs().sum() > 0 for b in model.teeth_bias)
    torch.testing.assert_close(teeth_units(torch.tensor([TEETH_MEAN, TEETH_MEAN + TEETH_STD])),
                               torch.tensor([0.0, 1.0]))


def test_told_shape_head_tells_the_decoder_what_inference_tells_it(tmp_path, expert, narrow, monkeypatch):
    """--told-shape head: no measured shape or teeth reaches the generator in training (the decoder
    learns from what its heads predict, as at inference), while the heads still learn the measured
    ones; the default tells the decoder the measured shape."""
    from lipsync.models.marlin_generator import MarlinLipGenerator

    told = []
    forward = MarlinLipGenerator.forward

    def spy(self, *args, **kwargs):
        told.append(kwargs.get("mouth_shape") is not None or kwargs.get("mouth_teeth") is not None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MarlinLipGenerator, "forward", spy)
    args = [*_tiny_marlin_args(_lips_data(tmp_path), expert), "--steps", "2", "--train-frames", "5",
            "--set", "mouth_input=true", "--set", "mouth_teeth=true", "--opening-wt", "0.5"]
    assert main([*args, "--out", str(tmp_path / "head"), "--told-shape", "head"]) == 0
    assert told and not any(told)
    logged = metrics(tmp_path / "head")
    assert logged[(2, "train/opening")] > 0 and logged[(2, "train/teeth")] > 0
    told.clear()
    assert main([*args, "--out", str(tmp_path / "measured")]) == 0
    assert any(told)


def test_told_shape_typo_is_refused_before_training(tmp_path):
    """A told_shape other than measured/head (API callers bypass argparse's choices) is an error,
    not a silent switch to the heads' shape."""
    from lipsync.training.common import TrainingError
    from lipsync.training.generator_loop import GeneratorTrainConfig, train_generator

    with pytest.raises(TrainingError, match="told_shape 'measure'"):
        train_generator(GeneratorTrainConfig(data=tmp_path, out=tmp_path / "run", told_shape="measure"))
    assert not (tmp_path / "run").exists()


def test_warp_loss_points_the_flow_at_lips_several_pixels_away():
    """The blurred terms turn the flow towards lips 4 px away; the sharp term alone does not."""
    from lipsync.training.generator_loop import warp_loss

    reference = torch.zeros(1, 3, 48, 48)
    reference[..., 20:23, 12:36] = 1.0  # a 3 px bright bar: the lips
    target = torch.roll(reference, 4, dims=-2)[:, :, None]  # 4 px lower
    mouth = torch.zeros(1, 1, 1, 48, 48)
    mouth[..., 14:32, 8:40] = 1.0

    def grad_y(blurs):
        flow = torch.zeros(1, 2, 12, 12, requires_grad=True)
        warp_loss(reference, flow, target, mouth, blurs).backward()
        return flow.grad[:, 1].sum().item()

    assert grad_y((1,)) <= 0  # sharp: the bars do not overlap; at best it shrinks the misplaced bar
    assert grad_y((3, 7, 11)) > 0  # blurred: the loss falls as the flow samples from higher up (y < 0)
    right = torch.zeros(1, 2, 12, 12)
    right[:, 1] = -4.0  # each pixel shows the one 4 px above it: the target exactly
    assert warp_loss(reference, right, target, mouth) < 1e-4 < warp_loss(reference, torch.zeros(1, 2, 12, 12),
                                                                         target, mouth)


def test_init_with_set_widens_the_decoder_and_computes_the_same(tmp_path):
    """--init --set decoder_channels/output_channels (wider): the trained weights keep their
    output exactly, the new channels learn, and narrowing or reshaping is refused."""
    from lipsync.models import GENERATORS
    from lipsync.training.common import TrainingError, build_model

    torch.manual_seed(2)
    base = registry.create_model("marlin_lip_tiny", img_size=48, reference_mask=None, composite=True,
                                 warp=True, mouth_input=True, mouth_reference=True).eval()
    # a trained model has non-trivial BatchNorm statistics and heads; make them so here
    with torch.no_grad():
        for name, p in base.named_parameters():
            if not name.startswith("encoder"):
                p.add_(0.05 * torch.randn_like(p))
        for name, b in base.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    path = checkpoints.save(tmp_path / "base.safetensors", base)
    wide = [c + 8 for c in base.config.decoder_channels]
    model = build_model("ignored", {"decoder_channels": wide, "output_channels": 24}, path, GENERATORS)
    assert list(model.config.decoder_channels) == wide and model.config.output_channels == 24
    assert model.output_block[0].conv_block[0].out_channels == 24
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.rand(1, 16, 1, 80, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(faces, mels), base(faces, mels), rtol=0, atol=1e-5)
    # the new channels take part after one step
    model.train()
    rgb = model.output_block[1].weight
    (model(faces, mels) - torch.rand(1, 3, 16, 48, 48)).abs().mean().backward()
    assert rgb.grad[:, base.config.output_channels:].abs().sum() > 0
    # round trip
    again = checkpoints.load(checkpoints.save(tmp_path / "wide.safetensors", model)).model.eval()
    assert list(again.config.decoder_channels) == wide
    narrow = [c - 4 for c in base.config.decoder_channels]
    with pytest.raises(TrainingError, match="channels can only be added"):
        build_model("ignored", {"decoder_channels": narrow}, path, GENERATORS)
    # a field that reshapes the layers the widening places weights by is still refused
    with pytest.raises(TrainingError, match="changes the weights"):
        build_model("ignored", {"decoder_channels": wide, "audio_skip": base.config.audio_skip + 4},
                    path, GENERATORS)
