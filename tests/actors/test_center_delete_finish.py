"""Deleting tasks and the reports runs send back when they end."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeLauncher
from dlnest_ray.errors import DlnestError

from ._helpers import Clock, gpu_row, info, launched, status


def test_delete_pending_cancels_at_once_and_never_launches(
    center: Center, launcher: FakeLauncher, clock: Clock, project: Path
):
    a = center.run_train(str(project), memory_mb=16000)
    b = center.run_train(str(project), memory_mb=16000)
    c = center.run_train(str(project), memory_mb=16000)
    assert status(center, c) == "PENDING"
    clock.advance(5)
    msg = center.del_task(c)
    assert c in msg
    rec = info(center, c)
    assert rec["status"] == "CANCELLED"
    assert rec["ended_at"] == clock.now and rec["started_at"] is None
    assert launcher.cancelled == []  # nothing to stop
    center.task_finished(a, "SUCCEEDED")
    center.schedule()
    assert c not in [x[0] for x in launched(launcher)]
    assert status(center, c) == "CANCELLED"
    assert c not in [t["task_id"] for t in [t.to_row() for t in center.get_task_info()]]
    assert status(center, b) == "RUNNING"


def test_delete_running_waits_for_the_report(center: Center, launcher: FakeLauncher, project: Path):
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    c = center.run_train(str(project), memory_mb=12000)  # waits for a GPU
    gpu_a = info(center, a)["gpus"][0]
    assert gpu_row(center, gpu_a)["reserved_mb"] == 12000

    center.del_task(a)
    assert launcher.cancelled == [a]
    rec = info(center, a)
    assert rec["status"] == "RUNNING"
    assert rec["cancelling"] is True
    assert info(center, b)["cancelling"] is False
    # still reserved until the supervisor reports: the waiting task cannot take the GPU yet
    assert gpu_row(center, gpu_a)["reserved_mb"] == 12000
    assert gpu_row(center, gpu_a)["tasks"] == [a]
    center.schedule()
    assert status(center, c) == "PENDING"

    center.task_finished(a, "FAILED", error="KeyboardInterrupt", output_tail=["stopping"])
    rec = info(center, a)
    assert rec["status"] == "CANCELLED"
    assert rec["cancelling"] is False
    assert rec["error"] == "KeyboardInterrupt" and rec["output_tail"] == ["stopping"]
    assert a not in gpu_row(center, gpu_a)["tasks"]
    # the freed GPU went to the waiting task
    assert status(center, c) == "RUNNING"
    assert launched(launcher)[-1] == (c, "node-0", (gpu_a,), 12000)


def test_cancelled_report_after_delete(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    center.del_task(a)
    center.task_finished(a, "CANCELLED")
    assert status(center, a) == "CANCELLED"
    assert gpu_row(center, 0)["reserved_mb"] == 0


def test_run_that_succeeds_despite_cancel_stays_succeeded(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    center.del_task(a)
    center.task_finished(a, "SUCCEEDED")
    assert status(center, a) == "SUCCEEDED"
    assert info(center, a)["cancelling"] is False


def test_delete_twice_and_delete_finished(center: Center, launcher: FakeLauncher, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    center.del_task(a)
    center.del_task(a)
    assert status(center, a) == "RUNNING"
    center.task_finished(a, "FAILED")
    assert status(center, a) == "CANCELLED"
    before = list(launcher.cancelled)
    msg = center.del_task(a)
    assert "already ended" in msg
    assert launcher.cancelled == before
    assert status(center, a) == "CANCELLED"


def test_delete_unknown_id(center: Center):
    with pytest.raises(DlnestError, match="T_0042"):
        center.del_task("T_0042")


def test_finished_keeps_error_and_output_tail(center: Center, clock: Clock, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    clock.advance(30)
    center.task_finished(a, "FAILED", error="ValueError: bad", output_tail=["epoch 1", "Traceback ..."])
    assert a not in [t["task_id"] for t in [t.to_row() for t in center.get_task_info()]]
    rec = info(center, a)
    assert rec["status"] == "FAILED"
    assert rec["error"] == "ValueError: bad"
    assert rec["output_tail"] == ["epoch 1", "Traceback ..."]
    assert rec["ended_at"] == clock.now
    assert rec["ended_at"] - rec["started_at"] == 30


def test_finished_tasks_leave_the_default_list(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    b = center.run_train(str(project), memory_mb=1000)
    c = center.run_train(str(project), placement="cpu")
    center.task_finished(b, "SUCCEEDED")
    center.task_finished(c, "FAILED", error="x")
    assert [t["task_id"] for t in [t.to_row() for t in center.get_task_info()]] == [a]
    assert [t["task_id"] for t in [t.to_row() for t in center.get_task_info(include_finished=True)]] == [
        a,
        b,
        c,
    ]


@pytest.mark.parametrize("late", ["FAILED", "SUCCEEDED", "CANCELLED"])
def test_duplicate_or_late_report_is_ignored(center: Center, clock: Clock, project: Path, late: str):
    a = center.run_train(str(project), memory_mb=1000)
    center.task_finished(a, "SUCCEEDED", output_tail=["done"])
    first = info(center, a)
    clock.advance(100)
    center.task_finished(a, late, error="late report", output_tail=["other"])
    assert info(center, a) == first


def test_report_for_unknown_task_is_ignored(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=1000)
    center.task_finished("T_0999", "SUCCEEDED")
    assert [t["task_id"] for t in [t.to_row() for t in center.get_task_info(include_finished=True)]] == [a]


def test_a_finished_report_frees_the_reservation(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=9000)
    assert gpu_row(center, 0)["reserved_mb"] == 9000
    center.task_finished(a, "SUCCEEDED")
    assert gpu_row(center, 0)["reserved_mb"] == 0
    assert gpu_row(center, 0)["free_mb"] == 16000
