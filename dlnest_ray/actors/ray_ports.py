"""The center's devices on Ray: one device monitor actor per node, and the GCS's view of free CPUs.

Nodes are named by the first 8 hex digits of their Ray node id (unique in practice, short enough for
tables and ``node:gpuN`` labels); the full id is looked up when something must be pinned to a node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, cast

from ..devices import FakeProbe, GpuInfo, default_probe
from ..errors import DlnestError
from .names import MONITOR_PREFIX, NAMESPACE
from .ports import Reservations
from .procs import pid_alive
from .warm import WarmPool, spawn_warm, wait_warm, warm_enabled

__all__ = ["DeviceMonitor", "RayDevices", "alive_nodes", "full_node_id", "monitor_for"]

READ_TIMEOUT_S = 20.0
MONITOR_CONCURRENCY = 8

log = logging.getLogger(__name__)


class DeviceMonitor:
    """Lives on one node (``num_cpus=0``): reads its GPUs, finds free ports, kills leftover processes,
    and keeps the node's warm rank process (:mod:`.warm`: the first is started with the monitor)."""

    def __init__(self) -> None:
        self.probe = default_probe()
        self._warm: WarmPool | None = None
        self._refill_warm()

    def _refill_warm(self) -> None:
        try:
            self._warm_pool().refill()
        except Exception as e:  # never let the warm process keep the monitor from its other work
            log.warning("could not keep a warm rank process: %s: %s", type(e).__name__, e)

    def _warm_pool(self) -> WarmPool:
        if self._warm is None:
            import ray

            node_id = ray.get_runtime_context().get_node_id()
            self._warm = WarmPool(lambda: spawn_warm(node_id), wait_warm, warm_enabled(os.environ))
        return self._warm

    def take_warm(self, run_env: dict[str, str]) -> tuple[Any, str]:
        """This node's warm rank process for a run whose submitter's environment is ``run_env``:
        ``(actor handle, "")``, the caller's from now on, or ``(None, why not)``. The next one starts."""
        return self._warm_pool().take(run_env)

    def warm_state(self) -> str:
        """This node's warm rank process: ``off``, ``none``, ``starting`` or ``ready``."""
        return self._warm_pool().state()

    def read(self, reserved: dict[int, int]) -> tuple[bool, list[dict[str, Any]]]:
        """(readings already subtract reservations, GPUs as dicts)."""
        self._refill_warm()  # one that died, or could not start before, is started again
        return isinstance(self.probe, FakeProbe), [asdict(g) for g in self.probe.read(reserved)]

    def address(self) -> str:
        import ray

        return str(cast(Any, ray.util).get_node_ip_address())  # untyped in Ray

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

    def kill_groups(self, pgids: list[int], grace_s: float = 0.0) -> list[int]:
        """SIGKILL these process groups (each rank leads its own); returns the ones that existed.

        First wait up to ``grace_s`` for each group's leader (the rank's Ray worker) to exit by itself:
        a worker that has run its one task (``max_calls=1``) exits gracefully and reports its task's end
        to Ray on the way out; killed before that, Ray would show the task as failed (worker died)."""
        deadline = time.monotonic() + grace_s
        while any(pid_alive(p) for p in pgids if p > 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed = []
        for pgid in pgids:
            if pgid <= 1 or pgid == os.getpgrp():
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
        return killed


def alive_nodes() -> dict[str, str]:
    """Short node name → full node id, for every alive node."""
    import ray

    nodes: list[dict[str, Any]] = cast(Any, ray).nodes()  # untyped in Ray
    return {n["NodeID"][:8]: n["NodeID"] for n in nodes if n.get("Alive")}


def full_node_id(name: str) -> str:
    full = alive_nodes().get(name)
    if full is None:
        raise DlnestError(f"node {name} is not part of the cluster any more")
    return full


def monitor_for(node_id: str) -> Any:
    """The device monitor of a node (created, pinned to it, when missing)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return (
        ray.remote(DeviceMonitor)
        .options(
            name=MONITOR_PREFIX + node_id,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            # kill_groups may wait out a rank's grace period: device reads must not queue behind it
            max_concurrency=MONITOR_CONCURRENCY,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        )
        .remote()
    )


class RayDevices:
    """:class:`~dlnest_ray.actors.ports.DeviceSource` over the per-node monitors."""

    def __init__(self) -> None:
        self.counts_reservations = False

    def read(self, reserved: Reservations) -> dict[str, tuple[GpuInfo, ...]]:
        import ray

        nodes = alive_nodes()
        refs = {n: monitor_for(full).read.remote(dict(reserved.get(n, {}))) for n, full in nodes.items()}
        out: dict[str, tuple[GpuInfo, ...]] = {}
        fake = []
        for name, ref in refs.items():
            try:
                counts, gpus = ray.get(ref, timeout=READ_TIMEOUT_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
                log.warning(
                    "node %s did not report its GPUs (%s): left out of this pass", name, type(e).__name__
                )
                continue
            fake.append(counts)
            out[name] = tuple(GpuInfo(**{**g, "processes": tuple(map(tuple, g["processes"]))}) for g in gpus)
        self.counts_reservations = bool(fake) and all(fake)
        return out

    def read_cpus(self, starting: Mapping[str, float], held: Mapping[str, float]) -> dict[str, float]:
        """Ray's available CPUs per alive node (placement groups already created are taken out), less the
        CPUs of launched tasks whose placement group Ray has not created yet."""
        from ray._private.state import available_resources_per_node

        del held  # already out of Ray's available resources
        alive = alive_nodes()
        out: dict[str, float] = {}
        per_node: dict[str, dict[str, float]] = cast(Any, available_resources_per_node)()  # untyped in Ray
        for full, resources in per_node.items():
            name = str(full)[:8]
            if name in alive:
                out[name] = float(resources.get("CPU", 0.0)) - starting.get(name, 0.0)
        for name in alive:  # a node with no CPU left is missing from Ray's map
            out.setdefault(name, -starting.get(name, 0.0))
        return out
