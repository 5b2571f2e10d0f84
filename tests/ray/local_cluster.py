"""A local Ray with logical GPUs, the fake device probe and a center: the module fixture of the e2e tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["TERMINAL", "local_client", "tasks", "wait_done", "wait_for"]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "STOPPED"}  # the statuses a task ends in


@contextmanager
def local_client(home: Path, *, num_cpus: int) -> Iterator[Any]:
    """A client of a center on a fresh local Ray (``num_cpus``, 2 logical GPUs, the fake probe 2 x 16000
    MB, a 5 s cancel grace); Ray is shut down and the variables removed afterwards."""
    import ray

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    os.environ["DLNEST_RAY_FAKE_GPUS"] = "2x16000"  # inherited by the workers Ray starts below
    os.environ["DLNEST_RAY_CANCEL_GRACE_S"] = "5"
    ray.init(
        num_cpus=num_cpus, num_gpus=2, namespace=NAMESPACE, include_dashboard=False, logging_level="ERROR"
    )
    try:
        yield Client(get_or_create_center(str(home)))
    finally:
        ray.shutdown()
        os.environ.pop("DLNEST_RAY_FAKE_GPUS", None)
        os.environ.pop("DLNEST_RAY_CANCEL_GRACE_S", None)


def tasks(client: Any) -> dict[str, dict[str, Any]]:
    """Every task of the center (finished ones too) as ``tasks --json`` rows, by id."""
    return {t["task_id"]: t for t in [t.to_row() for t in client.get_task_info(include_finished=True)]}


def wait_for(pred: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; an AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_done(client: Any, ids: list[str], timeout: float = 180.0) -> dict[str, dict[str, Any]]:
    """Wait until every task of ``ids`` has ended; the rows then. A timeout says where each task is and
    what the center said last."""
    try:
        wait_for(lambda: all(tasks(client)[i]["status"] in TERMINAL for i in ids), timeout, f"{ids} to end")
    except AssertionError:
        rows = tasks(client)
        keys = ("task_id", "status", "phase", "wait_reason", "attempt")
        where = [{k: rows[i].get(k) for k in keys} for i in ids]
        log = client.get_dlnest_output(0)["lines"][-20:]
        raise AssertionError(f"timed out waiting for {ids} to end: {where}; log: {log}") from None
    return tasks(client)
