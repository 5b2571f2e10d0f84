"""Helpers for the center tests: a manual clock and short views of the center's answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeLauncher


class Clock:
    """A clock that only moves when told to. It starts at the wall-clock time so that times the center
    records compare sensibly with times written by other code (package segments use ``time.time()``)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time())) if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def info(center: Center, task_id: str) -> dict[str, Any]:
    """``get_task_info(include_finished=True)`` entry of one task."""
    found = [
        t
        for t in [t.to_row() for t in center.get_task_info(include_finished=True)]
        if t["task_id"] == task_id
    ]
    assert len(found) == 1, f"{task_id} not listed once"
    return found[0]


def status(center: Center, task_id: str) -> str:
    return info(center, task_id)["status"]


def launched(launcher: FakeLauncher) -> list[tuple[str, str | None, tuple[int, ...], int]]:
    """(task id, node, GPU indices, MB per GPU) of every launch, in order."""
    return [(r.task_id, r.node, r.gpus, r.mb_per_gpu) for r in launcher.launched]


def gpu_row(center: Center, gpu: int, node: str = "node-0") -> dict[str, Any]:
    rows = [
        d for d in [d.to_json() for d in center.get_devices_info()] if d["node"] == node and d["gpu"] == gpu
    ]
    assert len(rows) == 1
    return rows[0]


def packages(project_config: Path) -> list[Path]:
    """Package folders in the project's save root (``./Saves``)."""
    saves = project_config.parent / "Saves"
    return sorted(p for p in saves.iterdir()) if saves.exists() else []
