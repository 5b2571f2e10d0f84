"""The center's scheduling (a mixin of :class:`~.center.Center`): read the devices and free CPUs, run
the pure policy (:mod:`dlnest_ray.scheduling.policy`), and act on its decisions — launch, wait (with a
reason), or preempt lower-priority tasks.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..devices import GpuInfo
from ..scheduling.policy import decide
from ..scheduling.specs import GpuState, Launch, NodeCpus, Preempt, Snapshot, Wait
from ..tasks import (
    NOT_STARTED_PHASES,
    TaskKind,
    TaskRecord,
    TaskStatus,
    transition,
)
from .center_core import (
    CenterCore,
)
from .center_memory import (
    held_mb,
    holders_on,
)
from .center_preempt import preempted
from .center_retries import retry_reason_line

__all__ = ["ScheduleOps"]

log = logging.getLogger(__name__)


class ScheduleOps(CenterCore):
    """Scheduling passes: device readings, the policy, launches and preemptions."""

    # ------------------------------------------------------------------------------------------ schedule
    def _reserved(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for r in self._running():
            if r.node is not None:
                for g in r.gpus:
                    out.setdefault(r.node, {})[g] = out.setdefault(r.node, {}).get(g, 0) + held_mb(r)
        return out

    def _readings(self) -> dict[str, tuple[GpuInfo, ...]]:
        """Every node's GPUs: remote calls, so made without the state lock."""
        with self._lock:
            reserved = self._reserved()
        return self.devices.read(reserved)

    def _gpu_states(self, readings: dict[str, tuple[GpuInfo, ...]]) -> tuple[GpuState, ...]:
        """The policy's view of ``readings`` with this center's reservations (hold the state lock)."""
        now, delay = self.clock(), self.store.settings.delay_s
        disabled = set(self.store.settings.disabled)
        running = self._running()
        gpus = []
        for node, infos in sorted(readings.items()):
            for info in infos:
                on_gpu = [r for r in running if r.node == node and info.index in r.gpus]
                recent = 0
                if (
                    not self.devices.counts_reservations
                ):  # NVML cannot see memory a fresh run has yet to allocate
                    recent = sum(
                        r.mb_per_gpu
                        for r in on_gpu
                        if r.started_at is not None and now - r.started_at < delay
                    )
                gpus.append(
                    GpuState(
                        node=node,
                        index=info.index,
                        total_mb=info.total_mb,
                        free_mb=info.free_mb,
                        tasks=len(on_gpu),
                        enabled=f"{node}:gpu{info.index}" not in disabled,
                        recent_mb=recent,
                        holders=holders_on(node, info.index, on_gpu, now),
                    )
                )
        self._gpus = tuple(gpus)
        return self._gpus

    def schedule(self) -> list[Launch | Wait | Preempt]:
        """One scheduling pass: launch what fits, record a wait reason for the rest.
        Call it without holding the state lock."""
        with self._pass_lock:
            while True:
                with self._lock:
                    if not any(r.status is TaskStatus.PENDING for r in self.store.tasks.values()):
                        return []
                    if self.store.draining:  # nothing may launch: no device reading needed
                        return self._pass({}, {})[0]
                readings = self._readings()
                cpus = self._cpu_readings()
                ending = self._ending_attempts()
                with self._lock:
                    decisions, relaunch = self._pass(readings, cpus, ending)
                if not relaunch:  # a failed launch freed its GPUs for the tasks behind it: pass again
                    return decisions

    def _cpu_readings(self) -> dict[str, float]:
        """Free CPUs per node (remote calls: without the state lock); launched tasks whose ranks Ray has
        not placed yet are counted as taken."""
        with self._lock:
            starting: dict[str, float] = {}
            held: dict[str, float] = {}
            for r in self._running():
                if r.node is not None:
                    into = starting if r.phase in NOT_STARTED_PHASES else held
                    into[r.node] = into.get(r.node, 0.0) + r.cpus
        return self.devices.read_cpus(starting, held)

    def _ending_attempts(self) -> set[str]:
        """Pending retries whose last attempt's supervisor still exists (it reports, then exits): a new
        one, named after the task too, cannot start before it is gone. A remote call: without the lock."""
        with self._lock:
            pending = [r for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
            retries = {r.task_id for r in pending if r.attempt > 1 or r.preemptions}
        return retries & self.launcher.alive() if retries else set()

    def _retry_soon(self) -> None:
        """A retry waits for its last attempt's supervisor to exit: pass again shortly (the Ray center
        wakes its scheduling loop; in-process, the next call to :meth:`schedule` does)."""

    def _pass(
        self,
        readings: dict[str, tuple[GpuInfo, ...]],
        cpus: dict[str, float],
        ending: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[list[Launch | Wait | Preempt], bool]:
        pending = [r for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
        snapshot = Snapshot(
            gpus=self._gpu_states(readings),
            settings=self._settings(),
            now=self.clock(),
            cpus=tuple(NodeCpus(node=n, free=free) for n, free in sorted(cpus.items())),
            draining=self.store.draining,
        )
        decisions = decide([r.spec for r in pending], snapshot)
        relaunch = False
        for d in decisions:
            record = self.store.tasks[d.task_id]
            if isinstance(d, Preempt):
                self._preempt(record, d)
                continue
            if isinstance(d, Wait) or d.task_id in ending:
                why = d.reason if isinstance(d, Wait) else "its last attempt is still ending"
                if record.attempt > 1 and record.attempt_reasons:  # a retry says so first
                    retry = retry_reason_line(record.attempt, record.attempts, record.attempt_reasons[-1])
                    why = f"{retry}; {why}"
                if record.preempted_by:  # as does a preempted run
                    why = f"preempted by {record.preempted_by}; {why}"
                if record.wait_reason != why:
                    self._set(replace(record, wait_reason=why), save=False)
                if not isinstance(d, Wait):
                    self._retry_soon()
                continue
            totals = [g.total_mb for g in self._gpus if g.node == d.node and g.index in d.gpus]
            running = transition(
                record,
                TaskStatus.RUNNING,
                at=self.clock(),
                node=d.node,
                gpus=d.gpus,
                mb_per_gpu=d.mb_per_gpu,
                first_mb_per_gpu=d.mb_per_gpu,
                gpu_total_mb=min(totals, default=0),
                phase="starting",
                phase_at=self.clock(),
                preempted_by="",
            )
            self._set(running)
            try:
                self.launcher.launch(running, self.envs.get(running.task_id))
            except Exception as e:  # the run could not even start: say why, free its reservation
                log.exception("%s: launch failed", d.task_id)
                self._set(
                    transition(running, TaskStatus.FAILED, at=self.clock(), error=f"launch failed: {e}")
                )
                self.log.write(f"{d.task_id} launch failed: {e}")
                relaunch = True
                continue
            where = (
                f"CPU ({d.node or 'any node'})"
                if not d.gpus
                else f"{d.node} GPU {','.join(map(str, d.gpus))} ({d.mb_per_gpu} MB each)"
            )
            self.log.write(f"{d.task_id} launched on {where}")
        self.store.save()
        return decisions, relaunch

    def _preempt(self, record: TaskRecord, d: Preempt) -> None:
        """Stop ``d.victims`` for ``record`` (state lock held): each becomes PREEMPTED and its supervisor is
        told (a run stops at the end of its epoch, after a checkpoint; an analyzer closes at once)."""
        for vid in d.victims:
            victim = self.store.tasks.get(vid)
            if victim is None or victim.status is not TaskStatus.RUNNING:
                continue
            stopped = preempted(victim, record.task_id, self.clock())
            self._set(stopped, save=False)
            how = "stops at the end of its epoch" if victim.kind is TaskKind.TRAIN else "closes now (idle)"
            higher = f"priority {record.priority} > {victim.priority}"
            self.log.write(f"{vid} preempted for {record.task_id} ({higher}): {how}")
            try:
                self.launcher.preempt(vid)
            except Exception as e:  # its supervisor is gone: its end is reported or found on restart
                log.exception("%s: preempt failed", vid)
                self.log.write(f"{vid}: could not tell it to stop: {e}")
            self._notify(stopped, final=False)
        if record.wait_reason != d.reason:
            self._set(replace(record, wait_reason=d.reason), save=False)
