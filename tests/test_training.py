"""Shared trainer utilities: atomic checkpoints, exact resume, NaN stop, schedule, sampler, logs."""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_train import one_thread_fixture
from torch import nn

from marlin.training import (
    MetricLogger,
    NonFiniteLossError,
    ResumableBatchSampler,
    TrainingError,
    atomic_torch_save,
    atomic_write,
    check_finite,
    load_training_state,
    lr_factor,
    make_loader,
    save_training_state,
    seed_everything,
    warmup_cosine,
)

REPO = Path(__file__).resolve().parents[1]


_one_thread = one_thread_fixture()  # tiny models: one intra-op thread is fastest


# --------------------------------------------------------------------------- atomic saves
def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)

    def crash(f):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # temp file removed


def test_sigkill_during_save_never_corrupts_latest(tmp_path):
    """A process is SIGKILLed while half of its new checkpoint is on disk."""
    path = tmp_path / "state.pt"
    script = textwrap.dedent(f"""
        import io, time, torch
        from marlin.training import atomic_torch_save, atomic_write
        atomic_torch_save({{"step": 0, "w": torch.zeros(100_000)}}, {str(path)!r})
        buf = io.BytesIO()
        torch.save({{"step": 1, "w": torch.ones(100_000)}}, buf)
        def write(f):
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            print("mid-write", flush=True)
            time.sleep(60)
        atomic_write({str(path)!r}, write)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"mid-write"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list(tmp_path.glob(".state.pt.*.tmp"))) == 1  # the torn write is there, aside
    state = torch.load(path, weights_only=True)
    assert state["step"] == 0 and torch.equal(state["w"], torch.zeros(100_000))


# --------------------------------------------------------------------------- exact resume
class NoisyData(torch.utils.data.Dataset):
    """Per-sample randomness drawn from the sampler's sample seed."""

    def __len__(self):
        return 5

    def __getitem__(self, key):
        index, seed = key
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(rng.standard_normal(4).astype(np.float32)) + index
        return x, x.sum(0, keepdim=True) * 0.5


def _train(out, steps, stop_at=None, resume=False):
    """Tiny run touching every RNG (dropout: torch, noise: numpy, python random)."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = warmup_cosine(opt, warmup_steps=3, total_steps=steps, min_lr=1e-4)
    start = 0
    if resume:
        start, extra = load_training_state(out / "state.pt", models={"m": model}, optimizers={"m": opt},
                                           schedulers={"m": sched})
        assert extra == {"note": "hello"}
    sampler = ResumableBatchSampler(5, 3, seed=1, start_step=start)
    batches = iter(make_loader(NoisyData(), sampler, seed=1))
    losses = []
    for _ in range(start, stop_at or steps):
        x, y = next(batches)
        x = x + 0.01 * float(np.random.standard_normal()) + 0.01 * random.random()  # noqa: NPY002
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    if stop_at is not None:
        save_training_state(out / "state.pt", models={"m": model}, optimizers={"m": opt},
                            schedulers={"m": sched}, step=stop_at, extra={"note": "hello"})
    return losses


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = _train(tmp_path, 12)
    first = _train(tmp_path, 12, stop_at=5)
    torch.manual_seed(123)  # disturb every RNG between the two halves
    np.random.seed(5)  # noqa: NPY002
    random.seed(7)
    second = _train(tmp_path, 12, resume=True)
    assert first == full[:5]
    assert second == full[5:]  # bit-identical


def test_load_rejects_wrong_objects(tmp_path):
    model = nn.Linear(2, 2)
    save_training_state(tmp_path / "s.pt", models={"m": model}, step=3)
    with pytest.raises(TrainingError, match="holds models"):
        load_training_state(tmp_path / "s.pt", models={"other": model})
    with pytest.raises(TrainingError, match="does not match"):
        load_training_state(tmp_path / "s.pt", models={"m": nn.Linear(3, 2)})
    with pytest.raises(TrainingError, match="no training state"):
        load_training_state(tmp_path / "missing.pt", models={"m": model})
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="not a readable"):
        load_training_state(tmp_path / "bad.pt", models={"m": model})


# --------------------------------------------------------------------------- NaN stop
def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "state.pt"
    x = torch.ones(4, 2)
    with pytest.raises(NonFiniteLossError) as err:
        for step in range(10):
            scale = float("nan") if step == 6 else 1.0
            loss = (model(x * scale) ** 2).mean()
            check_finite({"l1": torch.tensor(0.5), "loss": loss}, step, checkpoint=path)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 2 == 1:
                save_training_state(path, models={"m": model}, step=step + 1)
                good = {k: v.clone() for k, v in model.state_dict().items()}
    message = str(err.value)
    assert "step 6" in message and "loss=nan" in message and str(path) in message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # bad update never applied
    state = torch.load(path, weights_only=True)
    assert state["step"] == 6
    assert all(torch.equal(state["models"]["m"][k], v) for k, v in good.items())
    check_finite({"a": 1.0, "b": torch.tensor(2.0)}, 0)  # finite: no error
    with pytest.raises(NonFiniteLossError, match="inf"):
        check_finite({"a": float("inf")}, 3)


# --------------------------------------------------------------------------- schedule
def test_lr_factor_values():
    f = lambda s: lr_factor(s, warmup_steps=4, total_steps=14, min_ratio=0.1)  # noqa: E731
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    decay = [f(s) for s in range(4, 15)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_factor(0, warmup_steps=0, total_steps=10) == pytest.approx(1.0)


def test_warmup_cosine_scheduler_reaches_min_lr():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=6e-4)
    sched = warmup_cosine(opt, warmup_steps=2, total_steps=10, min_lr=4e-5)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(3e-4) and lrs[1] == pytest.approx(6e-4)
    assert lrs[6] == pytest.approx(4e-5 + (6e-4 - 4e-5) * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lrs[10] == pytest.approx(4e-5) and lrs[11] == pytest.approx(4e-5)
    with pytest.raises(TrainingError):
        warmup_cosine(opt, warmup_steps=1, total_steps=0)


# --------------------------------------------------------------------------- sampler / logger
def test_sampler_is_resumable_and_shards_ranks():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(ResumableBatchSampler(7, 2, seed=3), 10)
    assert take(ResumableBatchSampler(7, 2, seed=3, start_step=6), 4) == full[6:]
    items = [i for batch in full[:7] for i, _ in batch]  # 14 samples = two epochs of 7
    assert sorted(items) == sorted(list(range(7)) * 2)
    assert len({s for batch in full for _, s in batch}) == 20  # distinct sample seeds
    r0 = take(ResumableBatchSampler(8, 2, seed=0, rank=0, world_size=2), 2)
    r1 = take(ResumableBatchSampler(8, 2, seed=0, rank=1, world_size=2), 2)
    assert sorted(i for b in r0 + r1 for i, _ in b) == list(range(8))


def test_metric_logger_csv_and_resume_truncation(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=True)
    for step in (10, 20, 30):
        logger.log(step, {"loss": step / 10, "lr": torch.tensor(1e-3)})
    logger.close()
    logger = MetricLogger(tmp_path, resume_step=20)  # the run died after step 30, resumed at 20
    logger.log(30, {"loss": 9.0})
    logger.close()
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), r["name"], float(r["value"])) for r in rows if r["name"] == "loss"] == [
        (10, "loss", 1.0), (20, "loss", 2.0), (30, "loss", 9.0)]
    assert any((tmp_path / "tb").iterdir())
    MetricLogger(tmp_path / "other", enabled=False).log(1, {"x": 1.0})
    assert not (tmp_path / "other").exists()


def test_bf16_autocast_on_cpu_and_fp16_falls_back():
    from marlin.training import make_accelerator

    assert make_accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    acc = make_accelerator(cpu=True, mixed_precision="bf16")  # a second run in the same process
    assert acc.mixed_precision == "bf16"
    with acc.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.warns(UserWarning, match="needs a GPU"):
        assert make_accelerator(cpu=True, mixed_precision="fp16").mixed_precision == "no"
