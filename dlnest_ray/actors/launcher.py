"""The center's launcher on Ray: one detached supervisor actor per run, named after its task."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..tasks import TaskRecord
from .names import NAMESPACE, supervisor_name, task_of_supervisor
from .supervisor import RunSupervisor

__all__ = ["RayLauncher"]

log = logging.getLogger(__name__)


class RayLauncher:
    """:class:`~dlnest_ray.actors.ports.Launcher`: one detached supervisor actor per run, named after it."""

    def launch(self, record: TaskRecord, env: Mapping[str, str]) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor: Any = ray.remote(RunSupervisor)
        # Detached and self-starting: it supervises from its constructor and reports to the center by
        # name, so neither depends on this (center) process staying alive. It lives on the center's node
        # (it needs no resources), not on the run's: a run whose node is lost still has its end reported.
        # Hard affinity: with soft=True Ray 2.60 was seen to place it on another node now and then.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        actor.options(
            name=supervisor_name(record.task_id),
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=0,
            max_restarts=0,
            max_concurrency=4,
            scheduling_strategy=here,
        ).remote(record.to_json(), dict(env))

    def cancel(self, task_id: str) -> None:
        import ray

        try:
            ray.get_actor(supervisor_name(task_id), namespace=NAMESPACE).cancel.remote()
        except ValueError:  # its supervisor has ended already: nothing left to stop
            log.info("cancel of %s: its supervisor is gone", task_id)

    def preempt(self, task_id: str) -> None:
        import ray

        try:
            ray.get_actor(supervisor_name(task_id), namespace=NAMESPACE).preempt.remote()
        except ValueError:  # its supervisor has ended already: its end is reported
            log.info("preempt of %s: its supervisor is gone", task_id)

    def alive(self) -> set[str]:
        import ray

        names = ray.util.list_named_actors(all_namespaces=True)
        mine = {str(a["name"]) for a in names if isinstance(a, dict) and a.get("namespace") == NAMESPACE}
        return {task for name in mine if (task := task_of_supervisor(name)) is not None}
