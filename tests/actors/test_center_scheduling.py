"""Scheduling in-process with fake GPUs: best fit, waiting with reasons, devices, settings, DDP."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.devices import FakeProbe
from dlnest_ray.errors import DlnestError

from ._helpers import gpu_row, info, launched, status


def test_two_small_runs_share_gpu0_best_fit(center: Center, launcher: FakeLauncher, project: Path):
    a = center.run_train(str(project), memory_mb=6000)
    b = center.run_train(str(project), memory_mb=6000)
    assert launched(launcher) == [(a, "node-0", (0,), 6000), (b, "node-0", (0,), 6000)]
    assert status(center, a) == status(center, b) == "RUNNING"
    rec = info(center, a)
    assert (rec["node"], rec["gpus"], rec["mb_per_gpu"]) == ("node-0", [0], 6000)
    assert rec["started_at"] is not None and rec["wait_reason"] == ""
    # GPU 0 now has 4000 free: a third 6000 MB run goes to GPU 1, a 4000 MB one still fits GPU 0
    c = center.run_train(str(project), memory_mb=6000)
    d = center.run_train(str(project), memory_mb=4000)
    assert launched(launcher)[2:] == [(c, "node-0", (1,), 6000), (d, "node-0", (0,), 4000)]


def test_waiting_task_has_a_reason_and_starts_when_one_finishes(
    center: Center, launcher: FakeLauncher, project: Path
):
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    c = center.run_train(str(project), memory_mb=12000)
    d = center.run_train(str(project), memory_mb=12000)
    assert [x[0] for x in launched(launcher)] == [a, b]
    assert {x[2] for x in launched(launcher)} == {(0,), (1,)}
    for waiting in (c, d):
        rec = info(center, waiting)
        assert rec["status"] == "PENDING"
        assert "12000 MB" in rec["wait_reason"]
        assert "4000 MB" in rec["wait_reason"] and "node-0:gpu0" in rec["wait_reason"]
    assert info(center, a)["wait_reason"] == ""

    gpu_of_b = info(center, b)["gpus"]
    center.task_finished(b, "SUCCEEDED")
    assert status(center, b) == "SUCCEEDED"
    assert status(center, c) == "RUNNING"  # submit order
    assert status(center, d) == "PENDING"
    assert launched(launcher)[-1] == (c, "node-0", tuple(gpu_of_b), 12000)
    assert info(center, c)["wait_reason"] == ""


def test_default_memory_is_90_percent_of_a_gpu(center: Center, launcher: FakeLauncher, project: Path):
    a = center.run_train(str(project))
    b = center.run_train(str(project))
    c = center.run_train(str(project), memory_mb=1000)
    d = center.run_train(str(project))
    assert launched(launcher) == [
        (a, "node-0", (0,), 14400),
        (b, "node-0", (1,), 14400),
        (c, "node-0", (0,), 1000),
    ]
    assert "14400 MB" in info(center, d)["wait_reason"]


def test_cpu_tasks_start_even_when_gpus_are_full(center: Center, launcher: FakeLauncher, project: Path):
    ids = [center.run_train(str(project), memory_mb=16000) for _ in range(3)]
    assert status(center, ids[2]) == "PENDING"
    cpu = center.run_train(str(project), placement="cpu")
    assert status(center, cpu) == "RUNNING"
    assert launched(launcher)[-1] == (cpu, None, (), 0)
    assert status(center, ids[2]) == "PENDING"  # the CPU run took nothing from it
    assert info(center, cpu)["placement"] == "cpu"


def test_devices_info_shows_reservations(center: Center, project: Path):
    rows = [d.to_json() for d in center.get_devices_info()]
    assert [
        (r["node"], r["gpu"], r["total_mb"], r["free_mb"], r["reserved_mb"], r["tasks"]) for r in rows
    ] == [
        ("node-0", 0, 16000, 16000, 0, []),
        ("node-0", 1, 16000, 16000, 0, []),
    ]
    a = center.run_train(str(project), memory_mb=6000)
    b = center.run_train(str(project), memory_mb=5000)
    c = center.run_train(str(project), memory_mb=12000)
    g0, g1 = gpu_row(center, 0), gpu_row(center, 1)
    assert (g0["reserved_mb"], g0["free_mb"], sorted(g0["tasks"])) == (11000, 5000, sorted([a, b]))
    assert (g1["reserved_mb"], g1["free_mb"], g1["tasks"]) == (12000, 4000, [c])
    for g in (g0, g1):
        assert g["free_mb"] == g["total_mb"] - g["reserved_mb"]
        assert g["enabled"] is True
    center.task_finished(a, "FAILED", error="x")
    g0 = gpu_row(center, 0)
    assert (g0["reserved_mb"], g0["free_mb"], g0["tasks"]) == (5000, 11000, [b])


def test_change_devices_keeps_waiting_tasks_off_disabled_gpus(
    center: Center, launcher: FakeLauncher, project: Path
):
    disabled = center.change_devices(["node-0:gpu0"])
    assert disabled == ["node-0:gpu1"]
    assert [r["enabled"] for r in [d.to_json() for d in center.get_devices_info()]] == [True, False]
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    assert launched(launcher) == [(a, "node-0", (0,), 12000)]
    assert status(center, b) == "PENDING"
    assert "node-0:gpu1" not in info(center, b)["wait_reason"]
    center.schedule()
    assert status(center, b) == "PENDING"
    # enabling GPU 1 again lets it start there at once
    assert center.change_devices(["node-0:gpu0", "node-0:gpu1"]) == []
    assert status(center, b) == "RUNNING"
    assert launched(launcher)[-1] == (b, "node-0", (1,), 12000)


def test_all_devices_disabled(center: Center, project: Path):
    assert center.change_devices([]) == ["node-0:gpu0", "node-0:gpu1"]
    a = center.run_train(str(project), memory_mb=1000)
    assert status(center, a) == "PENDING"
    assert "no GPU is enabled" in info(center, a)["wait_reason"]


def test_change_devices_refuses_unknown_labels(center: Center, project: Path):
    center.change_devices(["node-0:gpu1"])
    with pytest.raises(DlnestError, match="node-0:gpu7"):
        center.change_devices(["node-0:gpu0", "node-0:gpu7"])
    # nothing changed
    assert [r["enabled"] for r in [d.to_json() for d in center.get_devices_info()]] == [False, True]


def test_disabling_does_not_stop_running_tasks(center: Center, project: Path):
    a = center.run_train(str(project), memory_mb=6000)
    center.change_devices(["node-0:gpu1"])
    assert status(center, a) == "RUNNING"
    assert gpu_row(center, 0)["tasks"] == [a]


def test_change_max_task_per_device(center: Center, launcher: FakeLauncher, project: Path):
    center.change_max_task_per_device(1)
    a = center.run_train(str(project), memory_mb=1000)
    b = center.run_train(str(project), memory_mb=1000)
    c = center.run_train(str(project), memory_mb=1000)
    assert launched(launcher) == [(a, "node-0", (0,), 1000), (b, "node-0", (1,), 1000)]
    assert status(center, c) == "PENDING"
    assert "1 task(s)" in info(center, c)["wait_reason"]
    # raising the limit starts it at once
    center.change_max_task_per_device(2)
    assert status(center, c) == "RUNNING"


def test_max_task_per_device_one_gpu(make_center, launcher: FakeLauncher, project: Path):
    center = make_center(devices=FakeDevices(probe=FakeProbe(count=1, total_mb=16000)))
    center.change_max_task_per_device(1)
    a = center.run_train(str(project), memory_mb=1000)
    b = center.run_train(str(project), memory_mb=1000)
    assert status(center, a) == "RUNNING" and status(center, b) == "PENDING"
    center.task_finished(a, "SUCCEEDED")
    assert status(center, b) == "RUNNING"


@pytest.mark.parametrize("bad", [0, -1])
def test_change_max_task_per_device_validates(center: Center, bad: int):
    with pytest.raises(DlnestError):
        center.change_max_task_per_device(bad)


def test_change_delay_validates(center: Center):
    assert center.delay_s == 60.0
    center.change_delay(5)
    assert center.delay_s == 5.0
    for bad in (0, -3):
        with pytest.raises(DlnestError):
            center.change_delay(bad)
    assert center.delay_s == 5.0


def test_ddp_gets_distinct_gpus(center: Center, launcher: FakeLauncher, project: Path):
    tid = center.run_train(str(project), placement="ddp", gpus=2, memory_mb=8000)
    assert launched(launcher) == [(tid, "node-0", (0, 1), 4000)]
    rec = info(center, tid)
    assert rec["gpus"] == [0, 1] and rec["gpus_requested"] == 2
    assert [r["reserved_mb"] for r in [d.to_json() for d in center.get_devices_info()]] == [4000, 4000]
    assert all(r["tasks"] == [tid] for r in [d.to_json() for d in center.get_devices_info()])


def test_ddp_default_memory_and_waiting(center: Center, launcher: FakeLauncher, project: Path):
    small = center.run_train(str(project), memory_mb=6000)
    ddp = center.run_train(str(project), placement="ddp", gpus=2)  # 90% of each GPU
    assert status(center, small) == "RUNNING"
    assert status(center, ddp) == "PENDING"
    assert "2 GPUs" in info(center, ddp)["wait_reason"]
    center.task_finished(small, "SUCCEEDED")
    assert launched(launcher)[-1] == (ddp, "node-0", (0, 1), 14400)


def test_two_nodes_best_fit_and_ddp_on_one_node(launcher: FakeLauncher, home: Path, clock, project: Path):
    devices = FakeDevices(nodes=("a", "b"), probe=FakeProbe(count=2, total_mb=16000))
    center = Center(home=home, launcher=launcher, devices=devices, clock=clock)
    assert {(r["node"], r["gpu"]) for r in [d.to_json() for d in center.get_devices_info()]} == {
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 1),
    }
    x = center.run_train(str(project), memory_mb=6000)
    y = center.run_train(str(project), memory_mb=6000)
    assert launched(launcher) == [(x, "a", (0,), 6000), (y, "a", (0,), 6000)]
    # node a: gpu0 has 4000 free, gpu1 16000; 2 x 8000 on one node only fits on node b
    z = center.run_train(str(project), placement="ddp", gpus=2, memory_mb=16000)
    assert launched(launcher)[-1] == (z, "b", (0, 1), 8000)
    assert gpu_row(center, 0, node="b")["tasks"] == [z]
    assert gpu_row(center, 0, node="a")["reserved_mb"] == 12000


def test_multi_uses_one_gpu_when_it_fits(center: Center, launcher: FakeLauncher, project: Path):
    tid = center.run_train(str(project), placement="multi", memory_mb=10000)
    assert launched(launcher) == [(tid, "node-0", (0,), 10000)]


class FlakyLauncher(FakeLauncher):
    """Its next ``fail`` launches raise."""

    fail: int = 0

    def launch(self, record, env) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("no supervisor for you")
        super().launch(record, env)


def test_launch_failure_fails_the_task_and_frees_the_gpu(make_center, home: Path, project: Path):
    launcher = FlakyLauncher()
    launcher.fail = 1
    center = make_center(launcher=launcher)
    a = center.run_train(str(project), memory_mb=16000)
    rec = info(center, a)
    assert rec["status"] == "FAILED"
    assert "launch failed" in rec["error"] and "no supervisor for you" in rec["error"]
    assert rec["ended_at"] is not None
    assert [r["reserved_mb"] for r in [d.to_json() for d in center.get_devices_info()]] == [0, 0]
    b = center.run_train(str(project), memory_mb=16000)
    c = center.run_train(str(project), memory_mb=16000)
    assert [x[:3] for x in launched(launcher)] == [(b, "node-0", (0,)), (c, "node-0", (1,))]
    assert any("launch failed" in line for line in center.get_dlnest_output()["lines"])


def test_launch_failure_of_a_waiting_task_lets_the_next_one_run(make_center, project: Path):
    launcher = FlakyLauncher()
    center = make_center(launcher=launcher, devices=FakeDevices(probe=FakeProbe(count=1, total_mb=16000)))
    a, b, c = (center.run_train(str(project), memory_mb=12000) for _ in range(3))
    assert [status(center, t) for t in (a, b, c)] == ["RUNNING", "PENDING", "PENDING"]
    launcher.fail = 1
    center.task_finished(a, "SUCCEEDED")
    assert status(center, b) == "FAILED"
    assert status(center, c) == "RUNNING"  # the failed launch freed the GPU in the same pass
    assert gpu_row(center, 0)["reserved_mb"] == 12000 and gpu_row(center, 0)["tasks"] == [c]
    assert launched(launcher)[-1][:3] == (c, "node-0", (0,))


def test_starving_task_holds_a_gpu(center: Center, launcher: FakeLauncher, clock, project: Path):
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    big = center.run_train(str(project), memory_mb=16000)
    small = center.run_train(str(project), memory_mb=4000)
    assert status(center, small) == "RUNNING"  # backfilled beside a or b
    center.task_finished(small, "SUCCEEDED")
    clock.advance(3601)  # longer than the default starvation bound (1 h)
    late = center.run_train(str(project), memory_mb=4000)
    late2 = center.run_train(str(project), memory_mb=4000)
    reason = info(center, big)["wait_reason"]
    assert "held for it" in reason
    held = "node-0:gpu0" if "node-0:gpu0 is held" in reason else "node-0:gpu1"
    # one younger small run still backfills the GPU that is not held; the next one must wait
    assert status(center, late) == "RUNNING"
    assert f"node-0:gpu{info(center, late)['gpus'][0]}" != held
    assert status(center, late2) == "PENDING"
    center.task_finished(a, "SUCCEEDED")
    center.task_finished(b, "SUCCEEDED")
    center.task_finished(late, "SUCCEEDED")
    assert status(center, big) == "RUNNING"
    assert big in [x[0] for x in launched(launcher)]


def test_supervisor_phases_show_on_running_tasks_only(center: Center, project: Path) -> None:
    a = center.run_train(str(project), memory_mb=12000)
    b = center.run_train(str(project), memory_mb=12000)
    c = center.run_train(str(project), memory_mb=12000)  # waits: both GPUs are taken
    assert info(center, a)["phase"] == "starting"  # launched, its supervisor not heard from yet
    center.task_phase(a, "waiting for resources")
    assert info(center, a)["phase"] == "waiting for resources"
    center.task_phase(c, "running")  # a pending task has no supervisor: ignored
    assert info(center, c)["phase"] == "" and status(center, c) == "PENDING"
    center.task_finished(b, "SUCCEEDED")
    center.task_phase(b, "running")  # a late report after the end changes nothing
    assert info(center, b)["phase"] == "starting" and status(center, b) == "SUCCEEDED"


class _GatedDevices(FakeDevices):
    """Device reads block until the test opens the gate: a node that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate = threading.Event()
        self.reading = threading.Event()

    def read(self, reserved):  # type: ignore[no-untyped-def]
        self.reading.set()
        self.gate.wait(timeout=30)
        return super().read(reserved)


def test_queries_are_answered_while_a_pass_waits_for_a_slow_device_read(make_center, project: Path) -> None:
    import threading

    devices = _GatedDevices()
    devices.gate.set()  # submitting reads devices too (the feasibility check)
    center = make_center(devices=devices)
    for _ in range(2):  # both GPUs taken
        center.run_train(str(project), memory_mb=12000)
    pending = center.run_train(str(project), memory_mb=12000)
    assert status(center, pending) == "PENDING"
    devices.gate.clear()
    devices.reading.clear()
    worker = threading.Thread(target=center.schedule)
    worker.start()
    assert devices.reading.wait(10)  # the pass is now blocked inside the device read
    answered: list[object] = []
    query = threading.Thread(
        target=lambda: answered.append([t.to_row() for t in center.get_task_info(include_finished=True)])
    )
    query.start()
    query.join(timeout=10)
    assert answered, "get_task_info waited for the blocked device read"
    devices.gate.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert any(t["task_id"] == pending for t in answered[0])  # type: ignore[union-attr]
