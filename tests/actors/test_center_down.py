"""`down` drains the center: nothing launches once it has begun, runs it stops before they began go
back to the queue, the state survives into the next `up`; and CPUs are part of a run's fit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.scheduling.policy import DRAINING_REASON

from ._helpers import Clock, info, launched, status


def _log(center: Center) -> str:
    return "\n".join(center.get_dlnest_output(0)["lines"])


def _began(center: Center, task_id: str) -> None:
    """What rank 0 does first: record its segment in the package."""
    SavePackage.open(info(center, task_id)["package"]).begin_segment({"kind": "train", "task_id": task_id})


def test_down_force_keeps_a_pending_run_queued_for_the_next_up(
    make_center: Callable[..., Center],
    launcher: FakeLauncher,
    home: Path,
    devices: FakeDevices,
    clock: Clock,
    project: Path,
):
    """The review's case: two runs RUNNING, one PENDING; `down --force` cancels the running ones, which
    frees a GPU; the pending run must not be launched into a cluster that is going away."""
    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    c = center.run_train(str(project), memory_mb=12000)
    _began(center, a)
    _began(center, b)
    assert status(center, c) == "PENDING"
    out = center.drain(cancel_running=True)
    assert out == {"running": [a, b], "pending": [c]}
    assert launcher.cancelled == [a, b]
    assert info(center, c)["wait_reason"] == DRAINING_REASON
    center.task_finished(a, "CANCELLED", "deleted while running")  # a's GPU is free now ...
    center.task_finished(b, "CANCELLED", "deleted while running")
    center.schedule()
    assert [t[0] for t in launched(launcher)] == [a, b]  # ... and nothing took it
    assert (status(center, a), status(center, b), status(center, c)) == ("CANCELLED", "CANCELLED", "PENDING")
    assert "draining: `dlnest-ray down` has begun" in _log(center)
    assert center.get_settings().draining is True

    # the center is killed and the head stopped; the next `up` makes a new center on the same home
    clock.advance(60)
    fresh = FakeLauncher()
    center = Center(home=home, launcher=fresh, devices=devices, clock=clock)
    assert status(center, c) == "PENDING" and fresh.launched == []  # still draining until `up` opens it
    assert "draining: `dlnest-ray down` has begun" in _log(center)  # the log survived too
    assert center.open_queue() is True
    assert status(center, c) == "RUNNING" and [t[0] for t in launched(fresh)] == [c]
    assert info(center, c)["submitted_at"] < info(center, c)["started_at"]
    assert center.open_queue() is False


def test_a_run_down_stopped_before_it_began_goes_back_to_pending(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=6000)  # launched, its ranks not yet started
    b = center.run_train(str(project), memory_mb=6000)
    _began(center, b)
    center.drain(cancel_running=True)
    center.task_finished(a, "CANCELLED", "cancelled before it started")
    center.task_finished(b, "CANCELLED", "deleted while running")
    rec = info(center, a)
    assert rec["status"] == "PENDING" and rec["node"] is None and rec["gpus"] == []
    assert rec["wait_reason"] == DRAINING_REASON and rec["started_at"] is None
    assert status(center, b) == "CANCELLED"
    assert f"{a} back in the queue: stopped by `down` before it started" in _log(center)


def test_a_user_delete_of_an_unstarted_run_still_cancels_it(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=6000)
    center.del_task(a)
    center.task_finished(a, "CANCELLED", "cancelled before it started")
    assert status(center, a) == "CANCELLED"


def test_a_run_that_never_started_when_the_cluster_went_away_is_pending_after_up(
    make_center: Callable[..., Center], home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    _began(center, b)
    center.drain()  # `down` without --force found nothing running? here: the head just died
    center = Center(home=home, launcher=FakeLauncher(), devices=devices, clock=clock)
    rec = info(center, a)
    assert rec["status"] == "PENDING" and rec["wait_reason"] == DRAINING_REASON
    assert status(center, b) == "FAILED"  # it had begun: its end is unknown, never silently rerun


def test_cpus_decide_as_well_as_memory(
    make_center: Callable[..., Center], project: Path, launcher: FakeLauncher, monkeypatch
):
    monkeypatch.setenv("DLNEST_RAY_CPUS_PER_RANK", "1")
    center = make_center(devices=FakeDevices(cpus_per_node=2))
    a = center.run_train(str(project), memory_mb=6000)
    b = center.run_train(str(project), memory_mb=6000)
    c = center.run_train(str(project), memory_mb=3000)
    assert [t[0] for t in launched(launcher)] == [a, b]
    rec = info(center, c)
    assert rec["status"] == "PENDING" and rec["started_at"] is None
    assert rec["wait_reason"] == "needs 1 CPU on the node of node-0:gpu0; 0 free"
    ddp = center.run_train(str(project), memory_mb=2000, placement="ddp", gpus=2)
    center.task_finished(a, "SUCCEEDED")
    assert status(center, c) == "RUNNING"  # a's CPU went to c, the older one
    assert status(center, ddp) == "PENDING" and "needs 2 CPUs" in info(center, ddp)["wait_reason"]
    center.task_finished(b, "SUCCEEDED")
    center.task_finished(c, "SUCCEEDED")
    assert status(center, ddp) == "RUNNING"
    assert info(center, ddp)["cpus_per_rank"] == 1.0


def test_cpus_per_rank_comes_from_the_centers_environment(center: Center, project: Path, monkeypatch):
    monkeypatch.setenv("DLNEST_RAY_CPUS_PER_RANK", "0.5")
    a = center.run_train(str(project), placement="cpu")
    assert info(center, a)["cpus_per_rank"] == 0.5
    monkeypatch.setenv("DLNEST_RAY_CPUS_PER_RANK", "zero")
    import pytest

    from dlnest_ray.errors import DlnestError

    with pytest.raises(DlnestError, match="DLNEST_RAY_CPUS_PER_RANK='zero'"):
        center.run_train(str(project), placement="cpu")


def test_the_ran_clock_starts_when_the_ranks_do(center: Center, clock: Clock, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    center.task_phase(a, "waiting for resources")
    assert info(center, a)["running_at"] is None
    clock.advance(30)
    center.task_phase(a, "running")
    assert info(center, a)["running_at"] == clock.now
    clock.advance(5)
    center.task_phase(a, "stopping")
    assert info(center, a)["running_at"] == clock.now - 5
