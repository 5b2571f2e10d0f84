"""Priorities and preemption, center side (issue 14 item 2), in-process with one fake GPU: a higher-priority
run preempts a lower one (PREEMPTED, the launcher told, a log line, a notice), which goes back to PENDING
as a continuation once it has stopped and runs again after; ``--no-preempt``, equal priorities, deleting
a stopping task, a victim that ends meanwhile, bad priorities, idle analyzers, a center restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.center_preempt import ANALYZER_IDLE_S
from dlnest_ray.actors.notify import Notifier
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.devices import FakeProbe
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack.package import SavePackage
from tests.projects import write_project
from tests.webhook_server import WebhookServer

from ._helpers import Clock, info, packages, status

FULL = 16000  # the whole fake GPU


@pytest.fixture
def devices() -> FakeDevices:
    return FakeDevices(probe=FakeProbe(count=1, total_mb=FULL))  # one node, one GPU: easy to fill


def _log(center: Center) -> str:
    return "\n".join(center.get_dlnest_output(0)["lines"])


def _stopped_after_a_checkpoint(center: Center, task_id: str) -> None:
    """What a preempted run leaves in its package: its segment, a (pinned) checkpoint, the segment ended."""
    import torch

    pkg = SavePackage.open(info(center, task_id)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": task_id})
    pkg.save_checkpoint({"w": torch.zeros(2), "finished_epoch": 0}, epoch=0, step=4, pin=True)
    pkg.end_segment(seg, status="preempted", finished_epoch=0)


def _gone(launcher: FakeLauncher, task_id: str) -> None:
    """Its supervisor has reported and exited."""
    launcher.running.discard(task_id)


def _preempted_pair(center: Center, project: Path, clock: Clock, **high_kw: object) -> tuple[str, str]:
    low = center.run_train(str(project), memory_mb=FULL)
    clock.advance(5)
    high = center.run_train(str(project), memory_mb=FULL, priority=5, **high_kw)  # type: ignore[arg-type]
    return low, high


# ------------------------------------------------------------------------------------------- the cycle
def test_a_higher_priority_run_preempts_a_lower_one_which_resumes_after_it(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    assert launcher.preempted == [low]
    row = info(center, low)
    assert row["status"] == "PREEMPTED"
    assert (row["preempted_by"], row["preemptions"], row["attempt"]) == (high, 1, 1)
    assert f"{low} preempted for {high} (priority 5 > 0): stops at the end of its epoch" in _log(center)
    assert status(center, high) == "PENDING"
    center.schedule()  # later passes: high waits for low, which is not told twice
    assert info(center, high)["wait_reason"] == (f"waiting for {low} to stop (preempted for it)")
    assert launcher.preempted == [low]
    assert [r.task_id for r in launcher.launched] == [low]

    _stopped_after_a_checkpoint(center, low)
    center.task_finished(low, "PREEMPTED")
    row = info(center, low)
    assert row["status"] == "PENDING"
    assert (row["preempted_by"], row["preemptions"], row["attempt"]) == (high, 1, 1)  # no failure
    assert (row["resume"], row["ckpt_id"], row["node"], row["gpus"]) == (True, -1, None, [])
    assert row["wait_reason"].startswith(f"preempted by {high}")
    assert row["ended_at"] is None and row["error"] == ""
    back = f"{low} back in the queue: preempted by {high}, resumes from the checkpoint it took"
    assert back in _log(center)
    assert status(center, high) == "RUNNING"  # the report's pass launched it on the freed GPU
    assert launcher.launched[-1].task_id == high

    _gone(launcher, low)
    center.task_finished(high, "SUCCEEDED")
    assert status(center, low) == "RUNNING"
    again = launcher.launched[-1]
    assert (again.task_id, again.resume, again.ckpt_id, again.attempt) == (low, True, -1, 1)
    row = info(center, low)
    assert row["preempted_by"] == "" and row["preemptions"] == 1
    center.task_finished(low, "SUCCEEDED")
    assert status(center, low) == "SUCCEEDED"


def test_a_preempted_run_without_a_checkpoint_starts_over(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    pkg = SavePackage.open(info(center, low)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": low})  # it ran, but stopped before a checkpoint
    pkg.end_segment(seg, status="preempted")
    center.task_finished(low, "PREEMPTED")
    row = info(center, low)
    assert row["status"] == "PENDING" and (row["resume"], row["ckpt_id"]) == (False, -1)
    assert f"{low} back in the queue: preempted by {high}, resumes from the start" in _log(center)


def test_the_preempted_run_waits_while_its_last_supervisor_ends(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    _stopped_after_a_checkpoint(center, low)
    center.task_finished(low, "PREEMPTED")
    center.task_finished(high, "SUCCEEDED")  # the GPU is free, but low's supervisor still exists
    assert status(center, low) == "PENDING"
    assert info(center, low)["wait_reason"].startswith(f"preempted by {high}")
    _gone(launcher, low)
    center.schedule()
    assert status(center, low) == "RUNNING"


# --------------------------------------------------------------------------------------- no preemption
def test_a_no_preempt_run_is_never_preempted(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low = center.run_train(str(project), memory_mb=FULL, no_preempt=True)
    clock.advance(5)
    high = center.run_train(str(project), memory_mb=FULL, priority=100)
    center.schedule()
    assert launcher.preempted == [] and status(center, low) == "RUNNING"
    assert info(center, low)["no_preempt"] is True
    reason = info(center, high)["wait_reason"]
    assert reason.startswith(f"needs {FULL} MB on 1 GPU") and "preempt" not in reason


def test_no_preempt_on_continue_too(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    first = center.run_train(str(project), memory_mb=FULL)
    package = info(center, first)["package"]
    _stopped_after_a_checkpoint(center, first)  # a checkpoint to continue from
    center.task_finished(first, "SUCCEEDED")
    low = center.continue_train(package, memory_mb=FULL, no_preempt=True, priority=-1)
    high = center.run_train(str(project), memory_mb=FULL, priority=1)
    assert launcher.preempted == [] and status(center, low) == "RUNNING" and status(center, high) == "PENDING"
    assert (info(center, low)["no_preempt"], info(center, low)["priority"]) == (True, -1)


def test_equal_priority_never_preempts(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low = center.run_train(str(project), memory_mb=FULL, priority=3)
    clock.advance(5)
    other = center.run_train(str(project), memory_mb=FULL, priority=3)
    center.schedule()
    assert launcher.preempted == []
    assert status(center, low) == "RUNNING" and status(center, other) == "PENDING"


def test_a_lower_priority_submission_never_preempts(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    high = center.run_train(str(project), memory_mb=FULL, priority=5)
    low = center.run_train(str(project), memory_mb=FULL, priority=-1)
    assert launcher.preempted == []
    assert status(center, high) == "RUNNING" and status(center, low) == "PENDING"


# ------------------------------------------------------------------------------------- while stopping
def test_deleting_a_preempted_task_cancels_it(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    center.del_task(low)
    assert launcher.cancelled == [low]
    assert status(center, low) == "PREEMPTED"  # still stopping
    center.task_finished(low, "PREEMPTED")  # it stopped at its epoch's end before the cancel arrived
    assert status(center, low) == "CANCELLED"
    assert status(center, high) == "RUNNING"


def test_a_preempted_victim_that_succeeds_meanwhile_ends_succeeded(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    center.task_finished(low, "SUCCEEDED")  # its last epoch was its end
    row = info(center, low)
    assert row["status"] == "SUCCEEDED" and row["ended_at"] is not None
    assert status(center, high) == "RUNNING"


def test_a_preempted_victim_that_fails_meanwhile_ends_failed(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock)
    center.task_finished(low, "FAILED", error="ValueError: boom")
    assert status(center, low) == "FAILED" and info(center, low)["error"].startswith("ValueError: boom")
    assert status(center, high) == "RUNNING"


def test_a_restarted_center_tells_a_live_preempted_supervisor_again(
    home: Path, devices: FakeDevices, clock: Clock, project: Path
) -> None:
    first = FakeLauncher()
    center = Center(home=home, launcher=first, devices=devices, clock=clock)
    low, high = _preempted_pair(center, project, clock)
    assert first.preempted == [low]
    del center
    again = FakeLauncher(running=set(first.running))
    center = Center(home=home, launcher=again, devices=devices, clock=clock)
    assert again.preempted == [low]
    assert status(center, low) == "PREEMPTED" and info(center, low)["preempted_by"] == high
    assert status(center, high) == "PENDING"


def test_a_restarted_center_requeues_a_preempted_run_that_stopped_while_it_was_down(
    home: Path, devices: FakeDevices, clock: Clock, project: Path
) -> None:
    first = FakeLauncher()
    center = Center(home=home, launcher=first, devices=devices, clock=clock)
    low, high = _preempted_pair(center, project, clock)
    _stopped_after_a_checkpoint(center, low)
    del center  # its supervisor's report never arrived; it is gone
    again = FakeLauncher(running=set(first.running) - {low})
    center = Center(home=home, launcher=again, devices=devices, clock=clock)
    row = info(center, low)
    assert row["status"] == "PENDING" and (row["resume"], row["ckpt_id"]) == (True, -1)
    assert (row["preempted_by"], row["preemptions"], row["attempt"]) == (high, 1, 1)
    center.schedule()
    assert status(center, high) == "RUNNING"


# ------------------------------------------------------------------------------------------ priorities
@pytest.mark.parametrize("bad", ["x", 1.5, True, "1.5", ""])
def test_a_bad_priority_is_one_line_and_queues_nothing(center: Center, project: Path, bad: object) -> None:
    with pytest.raises(DlnestError) as err:
        center.run_train(str(project), memory_mb=1000, priority=bad)  # type: ignore[arg-type]
    text = str(err.value)
    assert "--priority" in text and "\n" not in text
    assert center.get_task_info(include_finished=True) == []
    assert packages(project) == []  # refused before its package was made


def test_a_bad_priority_is_refused_by_continue_and_analyze(
    center: Center, project: Path, tmp_path: Path
) -> None:
    task = center.run_train(str(project), placement="cpu")
    package = info(center, task)["package"]
    with pytest.raises(DlnestError, match="--priority"):
        center.continue_train(package, priority="high")  # type: ignore[arg-type]
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    with pytest.raises(DlnestError, match="--priority"):
        center.analyze(package, ckpt_id=-2, scripts_dir=str(scripts), priority=2.5)  # type: ignore[arg-type]
    assert [t.task_id for t in center.get_task_info(include_finished=True)] == [task]


@pytest.mark.parametrize(("given", "kept"), [("7", 7), (" -2 ", -2), (0, 0), (12, 12)])
def test_a_whole_number_priority_is_kept(center: Center, project: Path, given: object, kept: int) -> None:
    task = center.run_train(str(project), placement="cpu", priority=given)  # type: ignore[arg-type]
    assert info(center, task)["priority"] == kept


def test_tasks_json_rows_have_the_priority_keys(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    low, high = _preempted_pair(center, project, clock, no_preempt=True)
    rows = {t["task_id"]: t for t in [r.to_row() for r in center.get_task_info()]}
    keys = ("priority", "preempted_by", "no_preempt", "preemptions")
    assert {k: rows[low][k] for k in keys} == {
        "priority": 0,
        "preempted_by": high,
        "no_preempt": False,
        "preemptions": 1,
    }
    assert {k: rows[high][k] for k in keys} == {
        "priority": 5,
        "preempted_by": "",
        "no_preempt": True,
        "preemptions": 0,
    }


def test_the_highest_priority_waiting_run_gets_the_gpu_first(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    running = center.run_train(str(project), memory_mb=FULL, no_preempt=True)
    a = center.run_train(str(project), memory_mb=FULL)
    b = center.run_train(str(project), memory_mb=FULL, priority=2)
    c = center.run_train(str(project), memory_mb=FULL, priority=1)
    center.task_finished(running, "SUCCEEDED")
    assert [status(center, t) for t in (a, b, c)] == ["PENDING", "RUNNING", "PENDING"]
    center.task_finished(b, "SUCCEEDED")
    assert [status(center, t) for t in (a, c)] == ["PENDING", "RUNNING"]


# ------------------------------------------------------------------------------------------- analyzers
@pytest.fixture
def analyzer_of(center: Center, project: Path, tmp_path: Path) -> Callable[[], str]:
    """Queue an analyzer taking the whole GPU, of a package made by a CPU run."""

    def make() -> str:
        run = center.run_train(str(project), placement="cpu")
        scripts = tmp_path / "scripts"
        scripts.mkdir(exist_ok=True)
        return center.analyze(
            info(center, run)["package"], ckpt_id=-2, scripts_dir=str(scripts), memory_mb=FULL
        )

    return make


def test_an_idle_analyzer_is_preempted_only_after_two_idle_minutes(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock, analyzer_of: Callable[[], str]
) -> None:
    aid = analyzer_of()
    assert status(center, aid) == "RUNNING"
    center.task_phase(aid, "ready")  # loaded, no script
    high = center.run_train(str(project), memory_mb=FULL, priority=5)
    assert launcher.preempted == [] and status(center, high) == "PENDING"
    clock.advance(ANALYZER_IDLE_S - 1)
    center.schedule()
    assert launcher.preempted == [] and status(center, aid) == "RUNNING"
    clock.advance(1)
    center.schedule()
    assert launcher.preempted == [aid] and status(center, aid) == "PREEMPTED"
    assert f"{aid} preempted for {high} (priority 5 > 0): closes now (idle)" in _log(center)
    center.task_finished(aid, "PREEMPTED")
    row = info(center, aid)
    assert row["status"] == "PENDING" and row["preempted_by"] == high and row["preemptions"] == 1
    assert status(center, high) == "RUNNING"


def test_a_busy_analyzer_is_never_preempted(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock, analyzer_of: Callable[[], str]
) -> None:
    aid = analyzer_of()
    center.task_phase(aid, "ready")
    center.task_phase(aid, "busy")  # a script runs
    high = center.run_train(str(project), memory_mb=FULL, priority=5)
    clock.advance(10 * ANALYZER_IDLE_S)
    center.schedule()
    assert launcher.preempted == [] and status(center, high) == "PENDING"
    center.task_phase(aid, "ready")  # its idle time counts from now, not from when it first was ready
    clock.advance(ANALYZER_IDLE_S / 2)
    center.schedule()
    assert launcher.preempted == []
    clock.advance(ANALYZER_IDLE_S / 2)
    center.schedule()
    assert launcher.preempted == [aid]


def test_an_analyzer_still_loading_is_not_preempted(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock, analyzer_of: Callable[[], str]
) -> None:
    aid = analyzer_of()  # phase "starting": never reported ready
    center.run_train(str(project), memory_mb=FULL, priority=5)
    clock.advance(10 * ANALYZER_IDLE_S)
    center.schedule()
    assert launcher.preempted == [] and status(center, aid) == "RUNNING"


def test_an_analyzer_priority_protects_it(
    center: Center, launcher: FakeLauncher, project: Path, clock: Clock, tmp_path: Path
) -> None:
    run = center.run_train(str(project), placement="cpu")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    package = info(center, run)["package"]
    aid = center.analyze(package, ckpt_id=-2, scripts_dir=str(scripts), memory_mb=FULL, priority=5)
    assert info(center, aid)["priority"] == 5
    center.task_phase(aid, "ready")
    center.run_train(str(project), memory_mb=FULL, priority=5)
    clock.advance(10 * ANALYZER_IDLE_S)
    center.schedule()
    assert launcher.preempted == []


# ---------------------------------------------------------------------------------------------- notice
@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


def test_a_preempted_notice_reaches_the_webhook_and_the_end_is_still_announced(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer, clock: Clock
) -> None:
    center = make_center()
    center.notifier = Notifier(on_failure=center.log.write, tries=3, first_delay_s=0.05)
    config = write_project(tmp_path / "hooked", extra={"notify": {"webhook": hook.url}})
    low, high = _preempted_pair(center, config, clock)
    [body] = hook.wait_for(1)
    assert (body["task_id"], body["status"], body["reason"]) == (low, "PREEMPTED", f"preempted by {high}")
    _stopped_after_a_checkpoint(center, low)
    center.task_finished(low, "PREEMPTED")  # back to PENDING: no word
    center.task_finished(high, "SUCCEEDED")
    bodies = hook.wait_for(2)
    assert [b["task_id"] for b in bodies][:2] == [low, high]
    _gone(center.launcher, low)  # type: ignore[arg-type]
    center.schedule()
    center.task_finished(low, "SUCCEEDED")  # its own webhook still announces its end
    bodies = hook.wait_for(3)
    assert [(b["task_id"], b["status"]) for b in bodies] == [
        (low, "PREEMPTED"),
        (high, "SUCCEEDED"),
        (low, "SUCCEEDED"),
    ]
    assert center.notifier.idle(5) and hook.hits == 3


def test_a_run_requeued_ahead_of_its_twin_does_not_cost_the_twin_its_held_gpu(
    make_center: Callable[..., Center], launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    # two GPUs: A (5) on gpu0, L (0) on gpu1; B (5, A's twin) preempts L; Z (9) preempts A, which goes
    # back to PENDING ahead of B. L's GPU is still B's: a small low-priority M must not take its rest
    center = make_center(devices=FakeDevices())
    a = center.run_train(str(project), memory_mb=FULL, priority=5)
    low = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=FULL, priority=5)
    z = center.run_train(str(project), memory_mb=FULL, priority=9)
    assert launcher.preempted == [low, a]
    center.task_finished(a, "PREEMPTED")
    assert status(center, z) == "RUNNING"
    m = center.run_train(str(project), memory_mb=4000)
    assert status(center, m) == "PENDING"
    assert info(center, b)["wait_reason"] == (f"waiting for {low} to stop (preempted for it)")


def test_a_restarted_center_requeues_an_analyzer_that_closed_for_a_preemption_while_it_was_down(
    home: Path,
    center: Center,
    launcher: FakeLauncher,
    devices: FakeDevices,
    project: Path,
    clock: Clock,
    analyzer_of: Callable[[], str],
) -> None:
    aid = analyzer_of()
    center.task_phase(aid, "ready")
    high = center.run_train(str(project), memory_mb=FULL, priority=5)
    clock.advance(ANALYZER_IDLE_S)
    center.schedule()
    assert status(center, aid) == "PREEMPTED"
    center.task_phase(aid, "stopping")  # its supervisor closed it, then went before its report arrived
    del center
    again = FakeLauncher(running=set(launcher.running) - {aid})
    center = Center(home=home, launcher=again, devices=devices, clock=clock)
    row = info(center, aid)
    assert (row["status"], row["preempted_by"], row["error"]) == ("PENDING", high, "")
    assert status(center, high) == "RUNNING"
