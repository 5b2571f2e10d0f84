"""The names dlnest-ray's actors go by on the cluster, and how to reach the center (a leaf module).

Everything here is plain data or a lookup by name: the namespace, the center's and the device monitors'
names, the name of a task's supervisor, and :func:`get_center`. Ray is imported inside functions only.
"""

from __future__ import annotations

from typing import Any

from ..errors import DlnestError
from ..tasks import TaskKind

__all__ = [
    "CENTER_NAME",
    "MONITOR_PREFIX",
    "NAMESPACE",
    "NOT_RUNNING",
    "NO_CLUSTER",
    "SUPERVISOR_SUFFIX",
    "center_exists",
    "get_center",
    "supervisor_name",
    "task_of_supervisor",
]

NAMESPACE = "dlnest_ray"
CENTER_NAME = "dlnest_ray_center"
MONITOR_PREFIX = "dlnest_ray_monitor_"
SUPERVISOR_SUFFIX = ".supervisor"
NO_CLUSTER = "no Ray cluster: run `dlnest-ray up` (or pass --address / set RAY_ADDRESS)"
NOT_RUNNING = "the dlnest-ray center is not running: run `dlnest-ray up`"


def get_center() -> Any:
    """The running center's handle, or a DlnestError telling how to start one."""
    import ray

    try:
        return ray.get_actor(CENTER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise DlnestError(NOT_RUNNING) from None


def center_exists() -> bool:
    try:
        get_center()
        return True
    except DlnestError:
        return False


def supervisor_name(task_id: str) -> str:
    """A run's supervisor is named after its task (``T_0007``); an analyzer task's name belongs to the
    analyzer actor itself (``A_0003``, what users ``ray.get_actor``), so its supervisor gets a suffix."""
    return f"{task_id}{SUPERVISOR_SUFFIX}" if TaskKind.of(task_id) is TaskKind.ANALYZE else task_id


def task_of_supervisor(actor_name: str) -> str | None:
    """The task id a supervisor's actor name belongs to (None: not a supervisor)."""
    kind = TaskKind.of(actor_name.removesuffix(SUPERVISOR_SUFFIX))
    if kind is TaskKind.TRAIN and not actor_name.endswith(SUPERVISOR_SUFFIX):
        return actor_name
    if kind is TaskKind.ANALYZE and actor_name.endswith(SUPERVISOR_SUFFIX):
        return actor_name.removesuffix(SUPERVISOR_SUFFIX)
    return None
