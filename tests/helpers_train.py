"""Test helpers the lip-sync trainer tests share (one-thread fixture, a loader that dies mid-run)."""

from __future__ import annotations

from collections.abc import Callable

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
