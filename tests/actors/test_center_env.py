"""A task's environment in the center: kept apart from the task list (0600), handed to its launch,
kept across a restart, removed when the task ends."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher

from ._helpers import Clock, info


def test_the_environment_reaches_the_launch_and_is_listed_nowhere(
    center: Center, launcher: FakeLauncher, home: Path, project: Path
) -> None:
    a = center.run_train(str(project), memory_mb=1000, env={"WANDB_API_KEY": "s3cret", "DATA": "/d"})
    assert launcher.envs[a] == {"WANDB_API_KEY": "s3cret", "DATA": "/d"}
    path = home / "env" / f"{a}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "env").stat().st_mode) == 0o700
    assert "s3cret" not in (home / "center.json").read_text()
    assert "s3cret" not in json.dumps([t.to_row() for t in center.get_task_info(include_finished=True)])
    assert "s3cret" not in "\n".join(center.get_dlnest_output()["lines"])
    center.task_finished(a, "SUCCEEDED")
    assert not path.exists()  # nothing secret lingers once the task ended


def test_a_pending_tasks_environment_survives_a_restart(
    make_center: Callable[..., Center], home: Path, devices: FakeDevices, clock: Clock, project: Path
) -> None:
    center = make_center()
    big = center.run_train(str(project), memory_mb=16000)
    waiting = center.run_train(str(project), memory_mb=16000, env={"X": "1"})
    also = center.run_train(str(project), memory_mb=16000, env={"X": "2"})
    assert info(center, also)["status"] == "PENDING"
    launcher = FakeLauncher(running={big, waiting})
    center = Center(home=home, launcher=launcher, devices=devices, clock=clock)
    center.task_finished(big, "SUCCEEDED")
    assert launcher.envs[also] == {"X": "2"}
    center.del_task(waiting)
    center.task_finished(waiting, "CANCELLED")
    assert sorted(os.listdir(home / "env")) == [f"{also}.json"]


def test_a_deleted_pending_task_leaves_no_environment(center: Center, home: Path, project: Path) -> None:
    a = center.run_train(str(project), memory_mb=16000)
    b = center.run_train(str(project), memory_mb=16000)
    c = center.run_train(str(project), memory_mb=16000, env={"TOKEN": "t"})
    assert (home / "env" / f"{c}.json").exists()
    center.del_task(c)
    assert not (home / "env" / f"{c}.json").exists()
    del a, b
