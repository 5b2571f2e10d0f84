"""Warm rank processes (issue 16): which runs a warm process suits, the monitor's pool of one (with
fakes for Ray's side), and the warm actor class run in-process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.actors import warm as warm_mod
from dlnest_ray.actors.warm import WarmPool, WarmRank, import_time_env, warm_enabled, warm_mismatch


@pytest.mark.parametrize(
    ("value", "enabled"), [(None, True), ("1", True), ("0", False), ("off", False), ("False", False)]
)
def test_warm_enabled(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {"DLNEST_RAY_WARM_RANKS": value}
    assert warm_enabled(env) is enabled


def test_import_time_env_keeps_what_torch_reads_at_import() -> None:
    env = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "2",
        "LD_PRELOAD": "x.so",
        "TORCH_LOGS": "dynamo",
        "PYTORCH_NO_CUDA_MEMORY_CACHING": "1",
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "HOME": "/root",
    }
    assert set(import_time_env(env)) == {
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "LD_PRELOAD",
        "TORCH_LOGS",
        "PYTORCH_NO_CUDA_MEMORY_CACHING",
    }


def test_warm_mismatch() -> None:
    warm = {"OMP_NUM_THREADS": "1"}
    assert warm_mismatch({"OMP_NUM_THREADS": "1", "PATH": "/other", "HOME": "/h"}, warm) == ""
    assert warm_mismatch({}, warm) == ""  # what the run does not set, a cold worker keeps too
    assert warm_mismatch({"OMP_NUM_THREADS": "4"}, warm) == (
        "the run sets OMP_NUM_THREADS='4', which torch reads at import (the warm process had '1')"
    )
    assert "LD_PRELOAD='a.so'" in warm_mismatch({"LD_PRELOAD": "a.so"}, warm)
    assert warm_mismatch({"LD_PRELOAD": "a.so"}, warm).endswith("(the warm process had unset)")


class FakeRay:
    """Ray's side of the pool: numbered handles, warm-ups that are running until ``finish``ed."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.spawned: list[str] = []
        self.done: dict[str, Any] = {}
        self.env = env or {"OMP_NUM_THREADS": "1"}
        self.fail_spawn = False

    def spawn(self) -> tuple[str, str]:
        if self.fail_spawn:
            raise RuntimeError("no node")
        handle = f"warm{len(self.spawned)}"
        self.spawned.append(handle)
        return handle, f"ref-{handle}"

    def finish(self, handle: str, result: Any = None) -> None:
        ready = {"pid": 1, "env": self.env, "took_s": 2}
        self.done[f"ref-{handle}"] = result if result is not None else ready

    def wait(self, ref: str, timeout_s: float) -> dict[str, Any]:
        assert timeout_s == 0.0  # the monitor never blocks on a warm-up
        if ref not in self.done:
            raise TimeoutError(ref)
        if isinstance(self.done[ref], Exception):
            raise self.done[ref]
        return dict(self.done[ref])


def test_pool_hands_out_a_ready_warm_process_once_and_starts_the_next() -> None:
    ray = FakeRay()
    pool = WarmPool(ray.spawn, ray.wait, enabled=True)
    assert pool.take({}) == (None, "no warm process is ready yet")  # nothing started before
    assert ray.spawned == ["warm0"]  # ... but asking started one
    assert pool.take({}) == (None, "the warm process is still importing torch")
    ray.finish("warm0")
    assert pool.take({"OMP_NUM_THREADS": "1", "PATH": "/x"}) == ("warm0", "")
    assert ray.spawned == ["warm0", "warm1"]  # its successor is on its way
    pool.refill()
    assert ray.spawned == ["warm0", "warm1"]  # one at a time


def test_pool_keeps_a_warm_process_that_does_not_suit_a_run() -> None:
    ray = FakeRay()
    pool = WarmPool(ray.spawn, ray.wait, enabled=True)
    pool.refill()
    ray.finish("warm0")
    handle, why = pool.take({"OMP_NUM_THREADS": "8"})
    assert handle is None and "OMP_NUM_THREADS='8'" in why
    assert pool.take({"OMP_NUM_THREADS": "1"}) == ("warm0", "")  # the next suitable run gets it


def test_pool_replaces_a_warm_process_that_died(caplog: pytest.LogCaptureFixture) -> None:
    ray = FakeRay()
    pool = WarmPool(ray.spawn, ray.wait, enabled=True)
    pool.refill()
    ray.finish("warm0", RuntimeError("the actor died"))
    with caplog.at_level(logging.WARNING):
        assert pool.take({}) == (None, "the warm process failed (RuntimeError)")
    assert "the actor died" in caplog.text
    assert ray.spawned == ["warm0", "warm1"]
    ray.finish("warm1")
    assert pool.take({}) == ("warm1", "")


def test_pool_that_cannot_spawn_logs_and_answers(caplog: pytest.LogCaptureFixture) -> None:
    ray = FakeRay()
    ray.fail_spawn = True
    pool = WarmPool(ray.spawn, ray.wait, enabled=True)
    with caplog.at_level(logging.WARNING):
        assert pool.take({}) == (None, "no warm process is ready yet")
    assert "could not start a warm rank process: RuntimeError: no node" in caplog.text


def test_pool_off_starts_nothing() -> None:
    ray = FakeRay()
    pool = WarmPool(ray.spawn, ray.wait, enabled=False)
    pool.refill()
    assert pool.take({}) == (None, "warm rank processes are off (DLNEST_RAY_WARM_RANKS=0)")
    assert ray.spawned == []


def test_warm_rank_imports_torch_without_cuda_and_runs_one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (the class is what Ray makes remote): its warm-up imports torch and the trainer and
    reports the import-time environment; it runs one rank, with ``warm_start``, and refuses a second."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    actor = WarmRank()
    info = actor.warm()
    assert info["pid"] == os.getpid() and info["took_s"] >= 0
    assert info["env"]["OMP_NUM_THREADS"] == "1" and "PATH" not in info["env"]
    assert {"torch", "torch.optim", "dlnest_ray.runtime.entry"} <= set(sys.modules)
    import torch

    assert not torch.cuda.is_initialized()
    calls: list[tuple[Any, ...]] = []

    def fake_rank_task(package: str, env: dict[str, str], **kwargs: Any) -> dict[str, object]:
        calls.append((package, env, kwargs))
        return {"finished_epoch": 0}

    monkeypatch.setattr("dlnest_ray.actors.rank.rank_task", fake_rank_task)
    assert actor.run("/pkg", {"A": "1"}, task_id="T_0001", rank=0) == {"finished_epoch": 0}
    assert calls == [("/pkg", {"A": "1"}, {"warm_start": True, "task_id": "T_0001", "rank": 0})]
    with pytest.raises(RuntimeError, match="runs one rank only"):
        actor.run("/pkg", {}, task_id="T_0002", rank=0)
    assert len(calls) == 1


def test_warm_module_does_not_import_ray_or_torch() -> None:
    """The monitor and the supervisor import it; Ray and torch come in only inside its functions."""
    source = Path(warm_mod.__file__).read_text(encoding="utf-8")
    top = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top if "ray" in line.split()[1] or "torch" in line.split()[1]], top


def test_warm_up_never_asks_for_cuda() -> None:
    """CUDA reads CUDA_VISIBLE_DEVICES once, when it starts: a warm-up that asked for devices would fix
    them before the rank sets its own. In a fresh interpreter, the warm-up's imports ask nothing."""
    code = (
        "import torch, torch.cuda as tc\n"
        "asked = []\n"
        "tc.is_available = lambda *a, **k: asked.append('is_available') or False\n"
        "tc.device_count = lambda *a, **k: asked.append('device_count') or 0\n"
        "from dlnest_ray.actors.warm import WarmRank\n"
        "WarmRank().warm()\n"
        "print(asked, tc.is_initialized())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] False"
