"""The center as a Ray actor: :class:`~dlnest_ray.actors.center.Center` with Ray's launcher and
devices, a scheduling loop (every ``delay`` seconds, besides the passes on submit and finish), gauges
for the Ray dashboard (pending and running tasks, reserved MB per GPU), and the fast control path (its
operations on ``<home>/center.sock`` for CLI commands on this machine, :mod:`.fastpath_server`); and the
two functions that create and remove the detached center actor."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from ..codeid import code_id
from ..records import CenterState
from ..tasks import TaskStatus
from .calls import ActorUnavailable, call
from .center import Center
from .fastpath_server import FastPathServer
from .launcher import RayLauncher
from .names import CENTER_NAME, MONITOR_PREFIX, NAMESPACE
from .ray_ports import RayDevices
from .store import default_home

__all__ = ["CenterActor", "get_or_create_center", "remove_center"]

log = logging.getLogger(__name__)

FOLLOW_UP_S = 2.0
ANALYZER_METHODS = frozenset({"submit", "poll", "cancel_job", "read_output", "info", "scripts"})
NOTICE_GRACE_S = 10.0  # how long `down` lets the center finish sending word of ended runs
RETRY_FOLLOW_UP_S = 1.0


class CenterActor(Center):
    def __init__(self, home: str) -> None:
        import ray

        self._gauges = _Gauges()  # before the base init: it already runs a scheduling pass
        self._code_id = code_id()  # now: the files may change while the center runs the code it loaded
        self._stop = threading.Event()
        self._wake = threading.Event()  # also before it: that pass may ask for a follow-up (a retry)
        super().__init__(home=Path(home), launcher=RayLauncher(), devices=RayDevices())
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.log.write(f"center {'restarted by Ray' if restarted else 'started'} (state in {home})")
        if not restarted:  # a new center is an `up`: a drain left by the last `down` ends here
            self.open_queue()
        threading.Thread(target=self._loop, name="dlnest-scheduler", daemon=True).start()
        self._fast: FastPathServer | None = None
        try:
            self._fast = FastPathServer(
                self, self.store.home, analyzer_call=self._analyzer_call, analyzer_alive=self._analyzer_alive
            )
        except OSError as e:  # e.g. a home path too long for a socket: the CLI goes through Ray
            log.warning("no fast path: %s: %s", type(e).__name__, e)
            self.log.write(f"no fast path for the CLI ({type(e).__name__}: {e}): commands go through Ray")

    def close(self, wait_s: float = 10.0) -> None:
        """The center is going away (``down``): stop serving the fast path, let notices go."""
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        super().close(wait_s)

    def _analyzer_alive(self, task_id: str) -> bool:
        """Whether analyzer ``task_id``'s actor exists (the fast path's ``exp`` waits for it)."""
        import ray

        try:
            ray.get_actor(task_id, namespace=NAMESPACE)
            return True
        except ValueError:
            return False

    def _analyzer_call(self, task_id: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """``method`` of analyzer ``task_id``'s actor, for a CLI command on the fast path."""
        import ray

        if method not in ANALYZER_METHODS:
            raise ActorUnavailable(f"an analyzer has no operation {method!r}")
        gone = f"{task_id} is not running any more (`dlnest-ray tasks --all`)"
        try:
            handle = ray.get_actor(task_id, namespace=NAMESPACE)
        except ValueError:
            raise ActorUnavailable(gone) from None
        return call(getattr(handle, method), *args, unavailable=gone, **kwargs)

    def ping(self) -> str:
        return "ok"

    def code_id(self) -> str:
        """The digest of the dlnest-ray code this center started with (:mod:`dlnest_ray.codeid`)."""
        return self._code_id

    def cluster_authenticates(self) -> bool:
        """Whether the cluster this center runs on requires an auth token (its processes run in Ray's
        token mode, as a head ``up`` started does)."""
        import importlib

        raylet: Any = importlib.import_module("ray._raylet")  # no type stubs for these
        return bool(raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN)

    def center_state(self) -> CenterState:
        """What `tasks` says besides the rows: ``draining`` (``down`` has begun) and ``authenticated``."""
        return CenterState(draining=self.draining, authenticated=self.cluster_authenticates())

    def owner_job(self) -> str:
        """The Ray job this center (and every run it starts) belongs to: its owner's (see ``owner.py``)."""
        import ray

        return str(ray.get_runtime_context().get_job_id())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.delay_s)
            self._wake.clear()
            try:
                self.check_supervisors()  # one killed without a report would hold its GPUs for ever
                self.schedule()
            except Exception as e:  # a failing pass (a node vanished mid-read) must not end the loop
                log.exception("scheduling pass failed")
                self.log.write(f"scheduling pass failed: {type(e).__name__}: {e}")

    def schedule(self) -> Any:
        decisions = super().schedule()
        self._gauges.update(self)
        return decisions

    def task_finished(
        self,
        task_id: str,
        status: str,
        error: str = "",
        output_tail: list[str] | None = None,
        reason: str = "",
    ) -> None:
        super().task_finished(task_id, status, error, output_tail, reason)
        # Ray's per-node view of free CPUs lags the removal of the run's placement group by a moment: a
        # task that waits for those CPUs gets another pass shortly, not only at the next `delay`.
        timer = threading.Timer(FOLLOW_UP_S, self._wake.set)
        timer.daemon = True
        timer.start()

    def _retry_soon(self) -> None:
        # a retry waits for its last attempt's supervisor to exit (it does within seconds of reporting)
        timer = threading.Timer(RETRY_FOLLOW_UP_S, self._wake.set)
        timer.daemon = True
        timer.start()

    def _memory_freed(self) -> None:
        # called from a rank's epoch report: the pass runs on the scheduler thread, the rank goes on
        self._wake.set()

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
        except Exception as e:  # a minimal Ray install has no metrics: the dashboard shows no gauges
            log.info("no dashboard gauges: %s: %s", type(e).__name__, e)
            self.ok = False

    def update(self, center: Center) -> None:
        if not self.ok:
            return
        tasks = list(center.store.tasks.values())
        self.pending.set(sum(r.status is TaskStatus.PENDING for r in tasks))
        self.running.set(sum(r.status.is_active() for r in tasks))
        reserved: dict[tuple[str, int], int] = {}
        for r in tasks:
            if r.status.is_active() and r.node:
                for g in r.gpus:
                    reserved[(r.node, g)] = reserved.get((r.node, g), 0) + r.mb_per_gpu
        for (node, gpu), mb in reserved.items():
            self.reserved.set(mb, tags={"node": node, "gpu": str(gpu)})


def get_or_create_center(home: str | None = None) -> Any:
    """The detached center actor; created (with ``home`` as its state folder) when it does not exist.

    The creating process's Ray job owns the center and every run it starts: when that driver exits,
    Ray marks their unfinished tasks FAILED. Only a driver that outlives the center may call this (the
    owner, :mod:`.owner`; a test's own driver); everything else uses :func:`~.client.connect`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor: Any = ray.remote(CenterActor)
    # on the creator's node (the owner runs on the head, whose loss ends the cluster anyway): the run
    # supervisors live beside the center, so losing a worker node loses neither. Hard: Ray 2.60 was seen
    # to place a zero-resource actor elsewhere with soft affinity.
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    handle = actor.options(
        name=CENTER_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0,
        max_concurrency=16,
        scheduling_strategy=here,
    ).remote(str(home or default_home()))
    ray.get(handle.ping.remote())
    return handle


def remove_center() -> None:
    """Kill the center and the device monitors (detached: they would outlive any driver)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if not isinstance(actor, dict) or actor.get("namespace") != NAMESPACE:
            continue
        name = str(actor.get("name"))
        if name == CENTER_NAME:
            _let_notices_go(ray)
        if name == CENTER_NAME or name.startswith(MONITOR_PREFIX):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            except ValueError:  # it ended meanwhile
                log.info("%s was gone before it could be removed", name)


def _let_notices_go(ray: Any) -> None:
    """Before the center is killed: give the notices it is still sending (the runs `down --force` just
    cancelled) up to :data:`NOTICE_GRACE_S` seconds. A center that cannot answer is killed anyway."""
    try:
        center = ray.get_actor(CENTER_NAME, namespace=NAMESPACE)
        ray.get(
            center.close.remote(wait_s=NOTICE_GRACE_S), timeout=NOTICE_GRACE_S + 15
        )  # + a last try's timeout
    except Exception as e:  # gone, or hung: it is killed next either way
        log.info("the center did not close its notifier: %s: %s", type(e).__name__, e)
