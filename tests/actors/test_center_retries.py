"""Retries, center side (issue 14): a FAILED attempt with a retryable reason goes back to PENDING in its
place as a continuation of its package (from its latest valid checkpoint, or over again when it has
none), with its attempt counted; anything else, or no retries left, ends it for good with every
attempt's reason; out of memory raises its memory; a center restart loses nothing and runs nothing
twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.center_retries import raised_memory_mb, retryable
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.checks import checked_retries
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.tasks import TaskRecord, retry_label
from tests.projects import write_project

from ._helpers import Clock, info, launched, status


def _ran(
    center: Center, task_id: str, *, checkpoint: bool = True, peak_mb: int | None = None, ended: bool = True
) -> None:
    """What rank 0 of the attempt left in its package: a segment (and a checkpoint of epoch 0), ended
    unless the attempt was killed."""
    import torch

    pkg = SavePackage.open(info(center, task_id)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": task_id})
    if checkpoint:
        pkg.save_checkpoint({"w": torch.zeros(2), "finished_epoch": 0}, epoch=0, step=4, wait=True)
    if ended:
        pkg.end_segment(seg, status="failed", finished_epoch=0, peak_gpu_mb=peak_mb)


def _ended(launcher: FakeLauncher, task_id: str) -> None:
    """Its supervisor has reported and exited (a retry waits for that: it is named after the task)."""
    launcher.running.discard(task_id)


def _log(center: Center) -> str:
    return "\n".join(center.get_dlnest_output(0)["lines"])


def test_a_lost_node_requeues_the_run_in_its_place_and_it_resumes_from_its_latest_checkpoint(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    a = center.run_train(str(project), memory_mb=16000)
    clock.advance(1)
    b = center.run_train(str(project), memory_mb=16000)
    clock.advance(1)
    c = center.run_train(str(project), memory_mb=16000)  # waits behind a and b
    submitted = info(center, a)["submitted_at"]
    assert [status(center, t) for t in (a, b, c)] == ["RUNNING", "RUNNING", "PENDING"]
    _ran(center, a)
    center.task_finished(a, "FAILED", "rank 0 died: WorkerCrashedError", ["x"], reason="node lost")
    row = info(center, a)
    assert row["status"] == "PENDING" and row["submitted_at"] == submitted  # its place in the queue
    assert (row["attempt"], row["attempts"], row["attempt_reasons"]) == (2, 3, ["node lost"])
    assert (row["resume"], row["ckpt_id"], row["node"], row["gpus"]) == (True, -1, None, [])
    assert row["error"] == "" and row["ended_at"] is None
    # its last supervisor has not exited yet: nothing launches in its place, c still waits
    assert row["wait_reason"] == "retry: attempt 2/3 after node lost; its last attempt is still ending"
    assert status(center, c) == "PENDING"
    assert retry_label(center.store.tasks[a]) == "attempt 2/3 (node lost)"
    _ended(launcher, a)
    center.schedule()
    assert status(center, a) == "RUNNING" and status(center, c) == "PENDING"
    again = launcher.launched[-1]
    assert (again.task_id, again.attempt, again.resume, again.ckpt_id) == (a, 2, True, -1)
    assert f"{a} attempt 1 ended: node lost; retrying (attempt 2/3)" in _log(center)
    center.task_finished(a, "SUCCEEDED")
    assert info(center, a)["status"] == "SUCCEEDED" and info(center, a)["attempt"] == 2
    assert status(center, c) == "RUNNING"


@pytest.mark.parametrize("reason", ["worker died", "killed by signal 9", "placement group lost"])
def test_every_retryable_reason_is_retried_and_without_a_checkpoint_the_run_starts_over(
    center: Center, launcher: FakeLauncher, project: Path, reason: str
) -> None:
    a = center.run_train(str(project), placement="cpu")
    _ran(center, a, checkpoint=False)
    center.task_finished(a, "FAILED", "rank 0 died", reason=reason)
    row = info(center, a)
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("PENDING", 2, [reason])
    assert (row["resume"], row["ckpt_id"]) == (False, -1)  # over again, in the same package
    assert row["wait_reason"].startswith(f"retry: attempt 2/3 after {reason}")
    _ended(launcher, a)
    center.schedule()
    assert [t for t, *_ in launched(launcher)] == [a, a]


def test_an_attempt_that_never_started_keeps_its_own_start(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center.run_train(str(project), placement="cpu")
    center.task_finished(a, "FAILED", "its node was lost before the run started", reason="node lost")
    row = info(center, a)
    assert (row["status"], row["resume"], row["ckpt_id"], row["attempt"]) == ("PENDING", False, -1, 2)


def test_a_user_error_a_bad_reason_and_a_cancel_are_not_retried(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center.run_train(str(project), placement="cpu")
    _ran(center, a)
    center.task_finished(a, "FAILED", "training failed: ValueError: boom (traceback in x)")
    row = info(center, a)
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("FAILED", 1, [])
    assert row["error"] == "training failed: ValueError: boom (traceback in x)"  # unchanged
    b = center.run_train(str(project), placement="cpu")
    center.task_finished(b, "FAILED", "odd", reason="cosmic rays")  # not a reason the center knows
    assert (status(center, b), info(center, b)["error"]) == ("FAILED", "odd")
    c = center.run_train(str(project), placement="cpu")
    center.del_task(c)
    center.task_finished(c, "FAILED", "rank 0 died: WorkerCrashedError", reason="worker died")
    assert (status(center, c), info(center, c)["attempt"]) == ("CANCELLED", 1)
    assert [t for t, *_ in launched(launcher)] == [a, b, c]


def test_when_retries_run_out_the_error_lists_every_attempt(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center.run_train(str(project), placement="cpu")  # the default: 2 retries, 3 attempts
    for n, reason in enumerate(["node lost", "worker died"], start=1):
        _ran(center, a)
        center.task_finished(a, "FAILED", f"rank 0 died ({n})", reason=reason)
        assert info(center, a)["attempt"] == n + 1
        _ended(launcher, a)
        center.schedule()
        assert status(center, a) == "RUNNING"
    center.task_finished(a, "FAILED", "rank 0 died: WorkerCrashedError", reason="killed by signal 9")
    row = info(center, a)
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == (
        "FAILED",
        3,
        ["node lost", "worker died"],
    )
    assert row["error"] == (
        "rank 0 died: WorkerCrashedError (attempt 3/3; killed by signal 9, no retries left; "
        "earlier: 1 node lost, 2 worker died)"
    )
    assert f"{a} attempt 3 ended: killed by signal 9; no retries left" in _log(center)
    b = center.run_train(str(project), placement="cpu", retries=0)
    center.task_finished(b, "FAILED", "rank 0 died", reason="worker died")
    assert info(center, b)["error"] == "rank 0 died"  # given no retries: its error as it is


def test_out_of_memory_is_retried_with_more_memory_up_to_the_largest_gpu(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    oom = "T ran out of its 4000 MB on gpu0 (peak 4300 MB): resubmit with --memory 4945 or more"
    a = center.run_train(str(project), memory_mb=4000)
    _ran(center, a, peak_mb=4300)
    center.task_finished(a, "FAILED", oom, reason="out of memory")
    row = info(center, a)
    # max(peak 4300 × 1.15 = 4945, reservation 4000 × 1.5 = 6000)
    assert (row["status"], row["memory_mb"], row["memory_auto"]) == ("PENDING", 6000, False)
    assert row["memory_source"] == "raised after out of memory (attempt 1)"
    assert row["peak_mb"] == 4300
    _ended(launcher, a)
    center.schedule()
    assert launched(launcher)[-1] == (a, "node-0", (0,), 6000)
    _ran(center, a, peak_mb=8000)  # the second attempt went further
    center.task_finished(a, "FAILED", oom, reason="out of memory")
    assert info(center, a)["memory_mb"] == 9200  # max(8000 × 1.15, 6000 × 1.5 = 9000)
    assert f"{a} attempt 2 ended: out of memory; retrying (attempt 3/3) with 9200 MB" in _log(center)
    # an auto run becomes explicit; the raise is capped by the largest GPU (16000 MB here)
    b = center.run_train(str(project), memory_mb=12000, retries=5)
    _ran(center, b, peak_mb=12000)
    center.task_finished(b, "FAILED", oom, reason="out of memory")
    assert info(center, b)["memory_mb"] == 16000
    _ended(launcher, b)
    center.schedule()
    assert status(center, b) == "RUNNING"
    center.task_finished(b, "FAILED", oom, reason="out of memory")  # a whole GPU was not enough
    row = info(center, b)
    assert row["status"] == "FAILED"
    assert row["error"] == (
        f"{oom} (attempt 2/6; out of memory with 16000 MB per GPU, the most a GPU here has: not retried; "
        "earlier: 1 out of memory)"
    )


def test_out_of_memory_of_a_ddp_run_raises_each_gpu(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center.run_train(str(project), memory_mb=8000, placement="ddp", gpus=2)
    assert info(center, a)["mb_per_gpu"] == 4000
    _ran(center, a, peak_mb=4100)
    center.task_finished(a, "FAILED", "ran out of its 4000 MB on gpu1", reason="out of memory")
    assert info(center, a)["memory_mb"] == 2 * 6000
    _ended(launcher, a)
    center.schedule()
    assert launched(launcher)[-1] == (a, "node-0", (0, 1), 6000)


def test_a_center_restart_while_a_retry_waits_loses_nothing_and_launches_it_once(
    make_center: Callable[..., Center], launcher: FakeLauncher, project: Path, home: Path
) -> None:
    first = make_center()
    a = first.run_train(str(project), memory_mb=4000)
    _ran(first, a)
    first.task_finished(a, "FAILED", "rank 0 died", reason="node lost")
    before = info(first, a)
    # restarted while a's last supervisor is still ending: it still waits, its attempt kept
    second = make_center()
    row = info(second, a)
    assert {k: row[k] for k in ("status", "attempt", "attempt_reasons", "resume", "submitted_at")} == {
        k: before[k] for k in ("status", "attempt", "attempt_reasons", "resume", "submitted_at")
    }
    assert row["status"] == "PENDING" and len(launcher.launched) == 1
    _ended(launcher, a)
    second.schedule()
    second.schedule()
    assert [t for t, *_ in launched(launcher)] == [a, a]  # launched once more, not twice
    assert launcher.launched[-1].attempt == 2
    # and a restart once its supervisor is gone: the new center launches it at once, once
    b = second.run_train(str(project), memory_mb=4000)
    _ran(second, b)
    second.task_finished(b, "FAILED", "rank 0 died", reason="worker died")
    _ended(launcher, b)
    third = Center(home=home, launcher=launcher, devices=FakeDevices(), clock=second.clock)
    third.schedule()
    assert [t for t, *_ in launched(launcher)].count(b) == 2
    assert info(third, b)["attempt"] == 2 and status(third, b) == "RUNNING"


def test_retries_come_from_the_option_the_config_or_the_cluster_default(
    center: Center, project: Path, tmp_path: Path
) -> None:
    assert info(center, center.run_train(str(project), placement="cpu"))["retries"] == 2
    assert info(center, center.run_train(str(project), placement="cpu", retries=0))["attempts"] == 1
    own = write_project(tmp_path / "own", extra={"retries": 5})
    assert info(center, center.run_train(str(own), placement="cpu"))["retries"] == 5
    assert info(center, center.run_train(str(own), placement="cpu", retries=1))["retries"] == 1
    center.change_retries(4)
    assert center.get_settings().retries == 4
    assert info(center, center.run_train(str(project), placement="cpu"))["retries"] == 4
    done = center.run_train(str(own), placement="cpu")
    _ran(center, done)  # a checkpoint to continue from
    center.task_finished(done, "SUCCEEDED")
    pkg = info(center, done)["package"]
    assert info(center, center.continue_train(pkg, placement="cpu"))["retries"] == 5  # its config's


@pytest.mark.parametrize("bad", [-1, "x", "1.5", True, None])
def test_bad_retries_are_one_line(center: Center, project: Path, tmp_path: Path, bad: object) -> None:
    if bad is not None:
        with pytest.raises(DlnestError) as e:
            center.run_train(str(project), placement="cpu", retries=bad)  # type: ignore[arg-type]
        assert "retries" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(DlnestError):
            center.change_retries(bad)  # type: ignore[arg-type]
    cfg = write_project(tmp_path / "bad", extra={"retries": "two" if bad is None else bad})
    with pytest.raises(DlnestError) as e:
        center.run_train(str(cfg), placement="cpu")
    assert "config key retries" in str(e.value) and "\n" not in str(e.value)
    assert center.get_task_info() == [] and not (tmp_path / "bad" / "Saves").exists()


def test_the_pure_rules() -> None:
    assert all(retryable(r) for r in ("node lost", "worker died", "killed by signal 15", "out of memory"))
    assert not any(retryable(r) for r in ("", "killed by signal x", "training failed"))
    assert checked_retries("3") == 3 and checked_retries(0) == 0
    rec = TaskRecord(task_id="T_0001", package="", submitted_at=0.0, mb_per_gpu=4000, peak_mb=7000, gpus=(0,))
    assert raised_memory_mb(rec, 1.15, 16000) == 8050
    assert raised_memory_mb(rec, 1.15, 8000) == 8000
    assert raised_memory_mb(rec, 1.15, 4000) is None
    old = TaskRecord.from_json({"task_id": "T_0001", "package": "p", "submitted_at": 1.0})  # before issue 14
    row = old.to_row()
    assert (
        row["attempt"],
        row["attempts"],
        row["attempt_reasons"],
        row["priority"],
        row["preempted_by"],
    ) == (
        1,
        3,
        [],
        0,
        "",
    )
    assert TaskRecord.from_json(row) == old


def test_the_supervisor_names_why_an_attempt_ended() -> None:
    from dlnest_ray.actors.supervisor import failure_reason

    oom = "T_0001 ran out of its 4000 MB on gpu0 (peak 5300 MB): resubmit with --memory 6095 or more"
    assert failure_reason(oom, died=False) == "out of memory"
    assert failure_reason("T_0001 ran out of memory on gpu1: resubmit with more --memory", died=False) == (
        "out of memory"
    )
    assert failure_reason("training failed: ValueError: boom (traceback in x)", died=False) == ""
    crashed = "The worker died unexpectedly while executing this task. Check python-core-worker-*.log files"
    assert failure_reason(crashed, died=True) == "worker died"
    assert failure_reason("the worker was killed by signal 15", died=True) == "killed by signal 15"
    assert failure_reason("the process received SIGKILL", died=True) == "killed by signal 9"
    # Ray's generic advice names signals it did not see: that is no signal
    assert failure_reason("crashed unexpectedly due to SIGSEGV or another error", died=True) == "worker died"


def test_a_segment_records_its_attempt_and_old_segments_still_read() -> None:
    from dlnest_ray.savepack.records import Segment

    seg = Segment.from_json(
        {"kind": "resume", "task_id": "T_0001", "attempt": 2, "retry_reason": "node lost"}
    )
    assert (seg.attempt, seg.retry_reason, seg.extra) == (2, "node lost", {})
    assert seg.to_json() == {"kind": "resume", "task_id": "T_0001", "attempt": 2, "retry_reason": "node lost"}
    old = Segment.from_json({"kind": "train", "task_id": "T_0001"})  # written before issue 14
    assert (old.attempt, old.retry_reason) == (None, None)
    assert old.to_json() == {"kind": "train", "task_id": "T_0001"}


def test_a_restart_finds_a_run_whose_node_and_supervisor_went_away_and_retries_it(
    home: Path, project: Path, clock: Clock
) -> None:
    two = FakeDevices(nodes=("node-0", "node-1"))
    first = Center(home=home, launcher=FakeLauncher(), devices=two, clock=clock)
    first.change_devices(["node-1:gpu0"])
    a = first.run_train(str(project), memory_mb=4000)
    assert info(first, a)["node"] == "node-1"
    _ran(first, a, ended=False)  # its segment never ended: the run was killed with its node
    fresh = FakeLauncher()  # no supervisor survived
    again = Center(home=home, launcher=fresh, devices=FakeDevices(), clock=clock)  # node-1 is gone
    row = info(again, a)
    assert (row["attempt"], row["attempt_reasons"], row["resume"]) == (2, ["node lost"], True)
    assert row["status"] == "PENDING"  # node-0's GPUs are still disabled
    again.change_devices(["node-0:gpu0", "node-0:gpu1"])
    assert (status(again, a), info(again, a)["node"]) == ("RUNNING", "node-0")  # on the node that is left
    assert [r.task_id for r in fresh.launched] == [a]
    assert f"{a} attempt 1 ended: node lost; retrying (attempt 2/3)" in _log(again)
