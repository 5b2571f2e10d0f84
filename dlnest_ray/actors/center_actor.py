"""The center as a Ray actor: :class:`~dlnest_ray.actors.center.Center` with Ray's launcher and
devices, a scheduling loop (every ``delay`` seconds, besides the passes on submit and finish), and
gauges for the Ray dashboard (pending and running tasks, reserved MB per GPU)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .center import Center
from .ray_ports import RayDevices, RayLauncher

__all__ = ["CenterActor"]

FOLLOW_UP_S = 2.0


class CenterActor(Center):
    def __init__(self, home: str) -> None:
        import ray

        self._gauges = _Gauges()  # before the base init: it already runs a scheduling pass
        super().__init__(home=Path(home), launcher=RayLauncher(), devices=RayDevices())
        self._stop = threading.Event()
        self._wake = threading.Event()
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.log.write(f"center {'restarted by Ray' if restarted else 'started'} (state in {home})")
        if not restarted:  # a new center is an `up`: a drain left by the last `down` ends here
            self.open_queue()
        threading.Thread(target=self._loop, name="dlnest-scheduler", daemon=True).start()

    def ping(self) -> str:
        return "ok"

    def cluster_authenticates(self) -> bool:
        """Whether the cluster this center runs on requires an auth token (its processes run in Ray's
        token mode, as a head ``up`` started does)."""
        import importlib

        raylet: Any = importlib.import_module("ray._raylet")  # no type stubs for these
        return bool(raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN)

    def center_state(self) -> dict[str, bool]:
        """What `tasks` says besides the rows: ``draining`` (``down`` has begun) and ``authenticated``."""
        return {"draining": self.draining, "authenticated": self.cluster_authenticates()}

    def owner_job(self) -> str:
        """The Ray job this center (and every run it starts) belongs to: its owner's (see ``owner.py``)."""
        import ray

        return str(ray.get_runtime_context().get_job_id())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.delay_s)
            self._wake.clear()
            try:
                self.schedule()
            except Exception as e:  # a failing pass (a node vanished mid-read) must not end the loop
                self.log.write(f"scheduling pass failed: {type(e).__name__}: {e}")

    def schedule(self) -> Any:
        decisions = super().schedule()
        self._gauges.update(self)
        return decisions

    def task_finished(
        self, task_id: str, status: str, error: str = "", output_tail: list[str] | None = None
    ) -> None:
        super().task_finished(task_id, status, error, output_tail)
        # Ray's per-node view of free CPUs lags the removal of the run's placement group by a moment: a
        # task that waits for those CPUs gets another pass shortly, not only at the next `delay`.
        timer = threading.Timer(FOLLOW_UP_S, self._wake.set)
        timer.daemon = True
        timer.start()

    def change_delay(self, seconds: float) -> None:
        super().change_delay(seconds)
        self._wake.set()  # the loop picks up the new interval now


class _Gauges:
    """``ray.util.metrics`` gauges; absent metrics support (a minimal Ray install) is not an error."""

    def __init__(self) -> None:
        try:
            from ray.util.metrics import Gauge

            self.pending = Gauge("dlnest_pending_tasks", description="dlnest-ray tasks waiting in the queue")
            self.running = Gauge("dlnest_running_tasks", description="dlnest-ray tasks running")
            self.reserved = Gauge(
                "dlnest_reserved_mb", description="GPU memory dlnest-ray reserved", tag_keys=("node", "gpu")
            )
            self.ok = True
        except Exception:
            self.ok = False

    def update(self, center: Center) -> None:
        if not self.ok:
            return
        from ..tasks import TaskStatus

        tasks = list(center.store.tasks.values())
        self.pending.set(sum(r.status is TaskStatus.PENDING for r in tasks))
        self.running.set(sum(r.status is TaskStatus.RUNNING for r in tasks))
        reserved: dict[tuple[str, int], int] = {}
        for r in tasks:
            if r.status is TaskStatus.RUNNING and r.node:
                for g in r.gpus:
                    reserved[(r.node, g)] = reserved.get((r.node, g), 0) + r.mb_per_gpu
        for (node, gpu), mb in reserved.items():
            self.reserved.set(mb, tags={"node": node, "gpu": str(gpu)})
