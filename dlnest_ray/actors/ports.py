"""The center's side effects behind small protocols, with fakes shipped for tests and GPU-less demos.

* :class:`Launcher` starts and cancels runs (on Ray: one detached supervisor actor per run). A run
  reports its end by calling ``Center.task_finished``.
* :class:`DeviceSource` reads every node's GPUs (on Ray: one device monitor actor per node) and free
  CPUs (on Ray: the GCS's available resources per node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..devices import FakeProbe, GpuInfo
from ..tasks import TaskRecord

__all__ = ["DeviceSource", "FakeDevices", "FakeLauncher", "Launcher", "Reservations"]

Reservations = Mapping[str, Mapping[int, int]]  # node → GPU index → MB reserved by dlnest-ray


class Launcher(Protocol):
    def launch(self, record: TaskRecord, env: Mapping[str, str]) -> None:
        """Start the run described by ``record`` (node, GPUs and MB already decided) with the submitter's
        environment ``env`` (see :mod:`dlnest_ray.runenv`); must not block."""

    def cancel(self, task_id: str) -> None:
        """Ask the run to stop: graceful first, then forced; it reports CANCELLED when fully gone."""

    def preempt(self, task_id: str) -> None:
        """Ask the run to stop for a higher-priority task: a training run at the end of the epoch it is
        in, after a checkpoint of it; an analyzer at once. It reports PREEMPTED once gone (or how it ended
        meanwhile)."""

    def alive(self) -> set[str]:
        """Ids of runs whose supervisor still exists (used to re-attach after a center restart)."""


class DeviceSource(Protocol):
    counts_reservations: bool
    """True when readings already subtract dlnest-ray's reservations (the fake probe does)."""

    def read(self, reserved: Reservations) -> dict[str, tuple[GpuInfo, ...]]:
        """GPUs per node id (a node without GPUs maps to an empty tuple)."""

    def read_cpus(self, starting: Mapping[str, float], held: Mapping[str, float]) -> dict[str, float]:
        """Free CPUs per node id once dlnest-ray's running tasks are counted: ``starting`` are CPUs of
        tasks launched whose ranks Ray has not placed yet, ``held`` those of placed ones (Ray's own
        reading already excludes them). A node left out is not limited by CPUs."""


@dataclass(kw_only=True)
class FakeLauncher:
    """Records launches, cancels and preemptions; tests finish runs by calling the center themselves."""

    launched: list[TaskRecord] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # the environment each launch got

    def launch(self, record: TaskRecord, env: Mapping[str, str]) -> None:
        self.launched.append(record)
        self.running.add(record.task_id)
        self.envs[record.task_id] = dict(env)

    def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)

    def preempt(self, task_id: str) -> None:
        self.preempted.append(task_id)

    def alive(self) -> set[str]:
        return set(self.running)


@dataclass(kw_only=True)
class FakeDevices:
    """Every node has the same fake GPUs (``DLNEST_RAY_FAKE_GPUS``); free = total − reserved. With
    ``cpus_per_node`` every node also has that many CPUs, free = total − what dlnest-ray's tasks hold;
    without it CPUs limit nothing."""

    nodes: tuple[str, ...] = ("node-0",)
    probe: FakeProbe = field(default_factory=lambda: FakeProbe(count=2, total_mb=16000))
    counts_reservations: bool = True
    cpus_per_node: float | None = None

    def read(self, reserved: Reservations) -> dict[str, tuple[GpuInfo, ...]]:
        return {n: self.probe.read(reserved.get(n, {})) for n in self.nodes}

    def read_cpus(self, starting: Mapping[str, float], held: Mapping[str, float]) -> dict[str, float]:
        if self.cpus_per_node is None:
            return {}
        total = self.cpus_per_node
        return {n: total - starting.get(n, 0.0) - held.get(n, 0.0) for n in self.nodes}
