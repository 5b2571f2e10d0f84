"""The center's state survives a restart: the queue, running runs (re-attached), ids and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack.package import SavePackage

from ._helpers import Clock, info, launched, status


def _pending_ids(center: Center) -> list[str]:
    return [t["task_id"] for t in [t.to_row() for t in center.get_task_info()] if t["status"] == "PENDING"]


def test_restart_keeps_queue_reattaches_and_continues_ids(
    home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    first_launcher = FakeLauncher()
    center = Center(home=home, launcher=first_launcher, devices=devices, clock=clock)
    ids = [center.run_train(str(project), memory_mb=12000) for _ in range(20)]
    assert ids[0] == "T_0001" and ids[-1] == "T_0020"
    running = [t["task_id"] for t in [t.to_row() for t in center.get_task_info()] if t["status"] == "RUNNING"]
    assert running == ["T_0001", "T_0002"]
    pending = _pending_ids(center)
    assert pending == ids[2:]
    before = {t["task_id"]: t for t in [t.to_row() for t in center.get_task_info()]}
    del center  # the actor dies; its supervisors live on

    launcher = FakeLauncher(running=set(first_launcher.running))
    clock.advance(60)
    center = Center(home=home, launcher=launcher, devices=devices, clock=clock)
    assert _pending_ids(center) == pending  # none lost, same order
    for t in [t.to_row() for t in center.get_task_info()]:
        old = before[t["task_id"]]
        for key in ("status", "package", "node", "gpus", "mb_per_gpu", "submitted_at", "started_at"):
            assert t[key] == old[key], (t["task_id"], key)
    assert [status(center, t) for t in running] == ["RUNNING", "RUNNING"]
    assert launcher.launched == []  # re-attached, not launched again
    assert sorted(r["reserved_mb"] for r in [d.to_json() for d in center.get_devices_info()]) == [
        12000,
        12000,
    ]
    assert any("re-attached" in line for line in center.get_dlnest_output()["lines"])

    center.task_finished("T_0001", "SUCCEEDED")
    assert [x[0] for x in launched(launcher)] == ["T_0003"]
    center.task_finished("T_0002", "SUCCEEDED")
    assert [x[0] for x in launched(launcher)] == ["T_0003", "T_0004"]
    assert _pending_ids(center) == ids[4:]

    assert center.run_train(str(project), placement="cpu") == "T_0021"


def test_restart_keeps_settings(make_center, project: Path):
    center = make_center()
    center.change_devices(["node-0:gpu1"])
    center.change_delay(7)
    center.change_max_task_per_device(3)
    center = make_center()
    assert center.delay_s == 7.0
    assert [r["enabled"] for r in [d.to_json() for d in center.get_devices_info()]] == [False, True]
    center.change_max_task_per_device(1)
    a = center.run_train(str(project), memory_mb=100)
    b = center.run_train(str(project), memory_mb=100)
    assert status(center, a) == "RUNNING" and info(center, a)["gpus"] == [1]
    assert status(center, b) == "PENDING"


def test_restart_keeps_finished_history(make_center, project: Path):
    center = make_center()
    a = center.run_train(str(project), memory_mb=100)
    center.task_finished(a, "FAILED", error="boom", output_tail=["x", "y"])
    center = make_center()
    rec = info(center, a)
    assert (rec["status"], rec["error"], rec["output_tail"]) == ("FAILED", "boom", ["x", "y"])
    # a late report to the new center does not change it
    center.task_finished(a, "SUCCEEDED")
    assert status(center, a) == "FAILED"


def _restart_without_supervisors(
    home: Path, devices: FakeDevices, clock: Clock
) -> tuple[Center, FakeLauncher]:
    launcher = FakeLauncher()  # nothing alive
    return Center(home=home, launcher=launcher, devices=devices, clock=clock), launcher


def test_run_gone_at_restart_succeeded_from_segment(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)
    pkg = SavePackage.open(info(center, a)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": a})  # as the trainer records it
    pkg.end_segment(seg, status="succeeded")
    clock.advance(10)
    center, _ = _restart_without_supervisors(home, devices, clock)
    rec = info(center, a)
    assert rec["status"] == "SUCCEEDED"
    assert rec["error"] == "" and rec["ended_at"] == clock.now
    assert [r["reserved_mb"] for r in [d.to_json() for d in center.get_devices_info()]] == [0, 0]


def test_run_gone_at_restart_failed_from_segment(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)
    pkg = SavePackage.open(info(center, a)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": a})
    pkg.end_segment(seg, status="failed", error="ValueError: nan loss")
    center, _ = _restart_without_supervisors(home, devices, clock)
    rec = info(center, a)
    assert rec["status"] == "FAILED"
    assert rec["error"] == "ValueError: nan loss"


def test_run_gone_at_restart_without_segment_end(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)  # no segment at all
    b = center.run_train(str(project), memory_mb=12000)
    pkg = SavePackage.open(info(center, b)["package"])
    pkg.begin_segment({"kind": "train", "task_id": b})  # began, never ended (killed)
    c = center.run_train(str(project), memory_mb=12000)  # pending
    clock.advance(5)
    center, launcher = _restart_without_supervisors(home, devices, clock)
    # b began its run and ended unseen: FAILED; a never started a rank: back in the queue, in its place
    rec = info(center, b)
    assert rec["status"] == "FAILED" and rec["error"]
    assert "back in the queue" in "\n".join(center.get_dlnest_output()["lines"])
    # the restart's own pass gives the GPUs of the runs that ended meanwhile to the waiting ones, a first
    assert [t[0] for t in launched(launcher)] == [a, c]
    rec = info(center, a)
    assert rec["status"] == "RUNNING" and rec["started_at"] == clock.now and rec["error"] == ""


def test_run_gone_at_restart_with_package_removed(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    import shutil

    center = make_center()
    a = center.run_train(str(project), memory_mb=12000)
    shutil.rmtree(info(center, a)["package"])
    center, _ = _restart_without_supervisors(home, devices, clock)
    assert status(center, a) == "FAILED"
    assert info(center, a)["error"]


def test_resumed_run_gone_at_restart_is_not_taken_for_the_earlier_success(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    """The package's last segment belongs to the *first* run; the continuation died before writing its
    own segment, so its end is unknown and must not be reported SUCCEEDED."""
    center = make_center()
    first = center.run_train(str(project), placement="cpu")
    pkg = SavePackage.open(info(center, first)["package"])
    seg = pkg.begin_segment({"kind": "train"})
    pkg.save_checkpoint({"x": 1})
    pkg.end_segment(seg, status="succeeded")
    center.task_finished(first, "SUCCEEDED")
    clock.advance(3600)
    resumed = center.continue_train(str(pkg.path), memory_mb=1000)
    assert status(center, resumed) == "RUNNING"
    center, launcher = _restart_without_supervisors(home, devices, clock)  # it died without a trace
    # it never started a rank (no segment of its own): queued again, never taken for the first run's end
    assert status(center, resumed) == "RUNNING"
    assert [t[0] for t in launched(launcher)] == [resumed]


def test_cancel_requested_before_restart_is_still_a_cancel(
    make_center, home: Path, devices: FakeDevices, clock: Clock, project: Path
):
    launcher = FakeLauncher()
    center = make_center(launcher=launcher)
    a = center.run_train(str(project), memory_mb=1000)
    center.del_task(a)
    center = Center(home=home, launcher=FakeLauncher(running={a}), devices=devices, clock=clock)
    assert info(center, a)["cancelling"] is True
    center.task_finished(a, "FAILED", error="KeyboardInterrupt")
    assert status(center, a) == "CANCELLED"


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", "null", '{"tasks": []}', '{"next_id": 3, "tasks": [{"task_id": "T_0001"}]}'],
)
def test_corrupt_state_file_names_the_file(home: Path, devices: FakeDevices, clock: Clock, content: str):
    home.mkdir(parents=True)
    (home / "center.json").write_text(content)
    with pytest.raises(DlnestError) as err:
        Center(home=home, launcher=FakeLauncher(), devices=devices, clock=clock)
    assert str(home / "center.json") in str(err.value)


def test_state_file_is_json_with_every_task(center: Center, home: Path, project: Path):
    a = center.run_train(str(project), memory_mb=16000)
    b = center.run_train(str(project), memory_mb=16000)
    c = center.run_train(str(project), memory_mb=16000)
    center.del_task(c)
    raw = json.loads((home / "center.json").read_text())
    assert raw["next_id"] == 4
    assert [(t["task_id"], t["status"]) for t in raw["tasks"]] == [
        (a, "RUNNING"),
        (b, "RUNNING"),
        (c, "CANCELLED"),
    ]


def test_a_supervisor_gone_without_a_report_is_noticed_while_the_center_runs(
    center: Center, launcher: FakeLauncher, clock: Clock, project: Path
):
    """Issue 14's last gap: a supervisor killed while the center runs (no report) no longer holds its
    GPUs until the next restart — the center's loop settles it from the package after a grace period."""
    done, lost = (
        center.run_train(str(project), memory_mb=12000),
        center.run_train(str(project), memory_mb=12000),
    )
    waiting = center.run_train(str(project), memory_mb=12000)
    pkg = SavePackage.open(info(center, done)["package"])
    seg = pkg.begin_segment({"kind": "train", "task_id": done})
    pkg.end_segment(seg, status="succeeded", finished_epoch=2)
    launcher.running -= {done, lost}  # both supervisors gone; neither reported
    clock.advance(30)
    assert center.check_supervisors() == []  # too young to be taken as gone: Ray may not list it yet
    clock.advance(31)
    assert center.check_supervisors() == [done, lost]
    assert status(center, done) == "SUCCEEDED"  # its package says how it ended
    # it never started a rank: back in the queue, and launched again at once with the third one
    assert [r.task_id for r in launcher.launched].count(lost) == 2
    assert status(center, lost) == status(center, waiting) == "RUNNING"
    log = "\n".join(center.get_dlnest_output(0)["lines"])
    assert f"{done} SUCCEEDED (its supervisor was gone)" in log
