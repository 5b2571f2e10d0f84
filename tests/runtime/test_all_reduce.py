"""dlnest-ray's all-reduce returns only when gloo's worker thread has let go of the tensor.

Otherwise that thread may free the tensor's Python object while the process finalizes, and a rank
that trained successfully aborts at exit (SIGABRT, "terminate called without an active exception").
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch
import torch.distributed as tdist

from dlnest_ray.runtime import distributed
from dlnest_ray.runtime.distributed import all_reduce


class _HeldWork:
    """A finished collective whose worker keeps a C++ reference to the tensor for ``hold_s``."""

    def __init__(self, t: torch.Tensor, hold_s: float | None) -> None:
        self.view: torch.Tensor | None = t.view(-1)  # a C++ reference, as gloo's work holds one
        if hold_s is not None:
            threading.Timer(hold_s, self._release).start()

    def _release(self) -> None:
        self.view = None

    def wait(self) -> bool:
        return True


def _fake_collective(monkeypatch: pytest.MonkeyPatch, hold_s: float | None) -> list[_HeldWork]:
    works: list[_HeldWork] = []

    def fake(t: torch.Tensor, op: object = None, group: object = None, async_op: bool = False) -> _HeldWork:
        assert async_op, "the helper must keep the work to wait on it"
        works.append(_HeldWork(t, hold_s))
        return works[-1]

    monkeypatch.setattr(tdist, "all_reduce", fake)
    return works


def test_waits_until_the_worker_lets_go(monkeypatch):
    _fake_collective(monkeypatch, hold_s=0.15)
    t = torch.tensor([1.0])
    start = time.monotonic()
    all_reduce(t, tdist.ReduceOp.SUM)
    assert time.monotonic() - start >= 0.14
    assert t._use_count() == 1  # only the caller holds it now


def test_gives_up_after_the_limit_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(distributed, "RELEASE_WAIT_S", 0.1)
    works = _fake_collective(monkeypatch, hold_s=None)  # never released
    t = torch.tensor([1.0])
    with caplog.at_level(logging.DEBUG, logger="dlnest_ray.runtime.distributed"):
        start = time.monotonic()
        all_reduce(t, tdist.ReduceOp.SUM)
        took = time.monotonic() - start
    assert 0.09 <= took < 2.0  # never hangs a run
    assert "still holds an all-reduce tensor" in caplog.text
    assert works[0].view is not None


def test_a_real_gloo_group_sums_and_releases(tmp_path):
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for i in range(200):
            t = torch.tensor([float(i)])
            all_reduce(t, tdist.ReduceOp.SUM)
            assert t.item() == float(i)
            assert t._use_count() == 1
    finally:
        tdist.destroy_process_group()
