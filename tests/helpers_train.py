"""Helpers the training tests share: one-thread fixture, metrics reader, interrupted runs."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


def one_thread_fixture():
    """A module-scoped autouse fixture running the module's tests on one intra-op thread.

    Use as ``_one_thread = one_thread_fixture()`` at module level: on a shared 2-core machine
    more threads spin against each other.
    """

    @pytest.fixture(autouse=True, scope="module")
    def _one_thread():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)

    return _one_thread


class Interrupt(Exception):
    """Raised by :func:`dying_loader` in place of a batch, like a killed job."""


def dying_loader(real: Callable, at: int) -> Callable:
    """A stand-in for ``make_loader`` whose batches raise :class:`Interrupt` when batch ``at``
    (0-based) is drawn."""

    def make(*a, **k):
        def batches():
            for i, batch in enumerate(real(*a, **k)):
                if i == at:
                    raise Interrupt
                yield batch
        return batches()

    return make


def metrics(out: Path) -> dict[tuple[int, str], float]:
    """A run's ``metrics.csv`` as ``{(step, name): value}``."""
    with open(out / "metrics.csv") as f:
        return {(int(r["step"]), r["name"]): float(r["value"]) for r in csv.DictReader(f)}


def full_and_resumed(main: Callable, loop: ModuleType, args: list[str], tmp_path: Path, monkeypatch,
                     at: int = 3) -> tuple[dict, dict]:
    """Run ``main(args)`` uninterrupted into ``tmp_path/full``, and into ``tmp_path/cut`` killed while
    drawing batch ``at`` of ``loop.make_loader`` then resumed with ``--resume``.

    Returns the two runs' metrics (``full``, ``cut``).
    """
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    real = loop.make_loader
    monkeypatch.setattr(loop, "make_loader", dying_loader(real, at=at))
    with pytest.raises(Interrupt):
        main([*args, "--out", str(tmp_path / "cut")])
    monkeypatch.setattr(loop, "make_loader", real)
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    return metrics(tmp_path / "full"), metrics(tmp_path / "cut")
