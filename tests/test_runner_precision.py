"""GeneratorRunner's precision="auto": a reduced precision is kept only if it runs and, on the
first batch of faces, agrees with fp32 (at most AUTO_SHARE of the values more than AUTO_LEVELS
levels off). bf16 runs on any CPU in torch, only slowly without native support, so these tests
pretend the CPU has it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lipsync.inference import runner as runner_mod
from lipsync.inference.runner import AUTO_LEVELS, AUTO_SHARE, GeneratorRunner

CPU = torch.device("cpu")
SIZE = 32


class Echo(nn.Module):
    """Returns the reference, scaled: in bf16 the scale rounds to 1, moving values by a level."""

    img_size = SIZE
    frames_per_window = 1

    def __init__(self, scale: float = 1.003) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, faces, mels):
        return faces[:, 3:] * self.scale


class Wraps(Echo):
    """The fractional part of 61x the reference: bf16's 8-bit mantissa moves nearly every value."""

    def forward(self, faces, mels):
        return torch.frac(faces[:, 3:] * 61.0 * self.scale)


class Strays(Echo):
    """In reduced precision, exactly ``off`` output values of each call are 10 levels too bright."""

    def __init__(self, off: int) -> None:
        super().__init__()
        self.off = off

    def forward(self, faces, mels):
        out = faces[:, 3:] * self.scale
        if out.dtype != torch.float32:
            flat = out.flatten().clone()
            flat[:self.off] += 10 / 255  # the crops below are <= 225: no clipping
            out = flat.view(out.shape)
        return out


class NoBf16(Echo):
    """Refuses reduced precision, on every batch or (``blank_ok``) only on real faces."""

    def __init__(self, blank_ok: bool = False) -> None:
        super().__init__()
        self.blank_ok = blank_ok

    def forward(self, faces, mels):
        if faces.dtype != torch.float32 and not (self.blank_ok and faces.max() == 0):
            raise RuntimeError("no such kernel for BFloat16")
        return faces[:, 3:] * self.scale


@pytest.fixture()
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(runner_mod, "_bf16_on_cpu", lambda: True)


def _batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    crops = torch.randint(30, 226, (n, SIZE, SIZE, 3), generator=g, dtype=torch.uint8).numpy()
    return crops, np.zeros((n, 80, 16), np.float32)


@pytest.mark.parametrize("optimize", [False, True])
def test_auto_keeps_bf16_after_a_first_batch_that_agrees(bf16_cpu, optimize):
    fp32 = GeneratorRunner(Echo(), CPU, "fp32", optimize=optimize)
    bf16 = GeneratorRunner(Echo(), CPU, "bf16", optimize=optimize)
    auto = GeneratorRunner(Echo(), CPU, "auto", optimize=optimize)
    assert auto.dtype == torch.float32  # nothing judged yet
    first, second = _batch(seed=0), _batch(seed=1)
    out = auto(*first)
    np.testing.assert_array_equal(out, fp32(*first))  # the judged batch is the fp32 one
    assert auto.dtype == torch.bfloat16
    np.testing.assert_array_equal(auto(*second), bf16(*second))
    assert not np.array_equal(bf16(*second), fp32(*second))  # bf16 does round: the two are told apart


def test_auto_stays_fp32_when_bf16_moves_the_values(bf16_cpu):
    fp32 = GeneratorRunner(Wraps(), CPU, "fp32", optimize=False)
    auto = GeneratorRunner(Wraps(), CPU, "auto", optimize=False)
    bf16 = GeneratorRunner(Wraps(), CPU, "bf16", optimize=False)
    first, second = _batch(seed=0), _batch(seed=1)
    off = np.abs(bf16(*first).astype(int) - fp32(*first))
    assert (off > AUTO_LEVELS).mean() > 0.5  # what the check has to catch
    np.testing.assert_array_equal(auto(*first), fp32(*first))
    assert auto.dtype == torch.float32
    np.testing.assert_array_equal(auto(*second), fp32(*second))


def test_auto_judges_on_the_share_of_values_off():
    n = 4
    values = n * SIZE * SIZE * 3
    allowed = int(AUTO_SHARE * values)
    for off, kept in ((allowed, True), (allowed + 1, False)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runner_mod, "_bf16_on_cpu", lambda: True)
            auto = GeneratorRunner(Strays(off), CPU, "auto", optimize=False)
        auto(*_batch(n))
        assert (auto.dtype == torch.bfloat16) is kept, off


def test_auto_is_fp32_without_native_bf16(monkeypatch):
    monkeypatch.setattr(runner_mod, "_bf16_on_cpu", lambda: False)
    auto = GeneratorRunner(Echo(), CPU, "auto", optimize=False)
    auto(*_batch())
    assert auto.dtype == torch.float32 and auto._trial is None


def test_auto_drops_a_precision_the_model_cannot_run(bf16_cpu, caplog):
    """A model that fails in bf16 on the first batch: fp32, and that batch still comes back."""
    fp32 = GeneratorRunner(Echo(), CPU, "fp32", optimize=False)
    with caplog.at_level("INFO", logger="lipsync.inference.runner"):
        auto = GeneratorRunner(NoBf16(), CPU, "auto", optimize=False)
        first, second = _batch(seed=0), _batch(seed=1)
        np.testing.assert_array_equal(auto(*first), fp32(*first))
        np.testing.assert_array_equal(auto(*second), fp32(*second))
    assert auto.dtype == torch.float32 and auto._trial is None
    assert "does not run in torch.bfloat16" in caplog.text


@pytest.mark.parametrize("blank_ok", [False, True])
def test_warmup_drops_a_precision_that_fails_on_a_blank_batch(bf16_cpu, blank_ok):
    auto = GeneratorRunner(NoBf16(blank_ok), CPU, "auto", optimize=False)
    auto.warmup()
    assert (auto._trial is not None) is blank_ok
    auto(*_batch())
    assert auto.dtype == torch.float32 and auto._trial is None


def test_auto_leaves_the_fp32_model_in_fp32(bf16_cpu):
    """Without optimize the fp32 runner uses the caller's module itself: the bf16 candidate is
    a copy, so neither the runner's fp32 model nor the caller's is converted."""
    model = Echo()
    auto = GeneratorRunner(model, CPU, "auto", optimize=False)
    assert model.scale.dtype == torch.float32 and auto.model.scale.dtype == torch.float32
    assert auto._trial[1].scale.dtype == torch.bfloat16


def test_warmup_runs_both_and_judges_nothing(bf16_cpu):
    auto = GeneratorRunner(Echo(), CPU, "auto", optimize=False)
    auto.warmup()
    assert auto.dtype == torch.float32 and auto._trial is not None
    auto(*_batch())
    assert auto.dtype == torch.bfloat16
