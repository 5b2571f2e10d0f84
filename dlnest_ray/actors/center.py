"""The center: holds tasks and devices, runs the scheduling policy, launches runs, keeps the history.

A plain class, made a detached Ray actor where it is created (``actors/client.py``) and driven
in-process by tests with :class:`~dlnest_ray.actors.ports.FakeLauncher`. Every public method takes
one lock: the actor is threaded (a scheduling loop runs beside the calls). Its parts: submitting
(:mod:`.center_submit`), the runs' reports (:mod:`.center_reports`), scheduling
(:mod:`.center_schedule`), sweeps (:mod:`.center_sweeps`), over the shared state of
:mod:`.center_core`; here: set-up, settings, ``del``, ``down``/``up``, re-attaching after a restart,
and the queries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..records import DeviceInfo, SettingsInfo
from ..savepack.records import Segment
from ..scheduling.policy import DRAINING_REASON
from ..scheduling.specs import GpuState
from ..sweeps.records import is_sweep_id
from ..tasks import (
    TaskKind,
    TaskRecord,
    TaskStatus,
    requeue,
    transition,
)
from .center_core import (
    ANALYZER_CPUS_ENV,
    CPUS_ENV,
    never_started,
    package_segment,
)
from .center_preempt import back_in_queue
from .center_reports import ReportOps
from .center_retries import retry_decision
from .center_schedule import ScheduleOps
from .center_settings import CenterSettingsOps
from .center_sweeps import SweepOps
from .notify import Notifier, NotifyStore
from .ports import DeviceSource, Launcher
from .store import LOG_FILE, CenterStore, EnvStore, LogBuffer
from .task_rows import rows_with_metrics

__all__ = ["ANALYZER_CPUS_ENV", "CPUS_ENV", "ORPHAN_GRACE_S", "Center"]

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 60.0  # a supervisor younger than this may not be listed yet: not taken as gone


class Center(SweepOps, ReportOps, ScheduleOps):
    """DLNest's server operations, plus the reports runs send back (submitting: :class:`SweepOps` is
    :class:`~.center_submit.SubmitOps` with sweeps)."""

    def __init__(
        self, *, home: Path, launcher: Launcher, devices: DeviceSource, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.RLock()
        self.store = CenterStore(home)
        self.envs = EnvStore(self.store.home)  # each task's environment, apart from center.json
        self.launcher = launcher
        self.devices = devices
        self.clock = clock
        self.log = LogBuffer(self.store.home / LOG_FILE)
        self.notify_store = NotifyStore(self.store.home)  # webhooks and mail logins, apart from center.json
        self.notifier = Notifier(on_failure=self.log.write)  # no thread until a notice is queued
        self._gpus: tuple[GpuState, ...] = ()
        self._told_lacking: set[str] = set()  # sweeps whose stop rule's metric is not recorded (said once)
        # One pass at a time, so nothing launches between a pass's device reading and its decisions.
        # Device reads are remote calls: they are made with the state lock released, and schedule()
        # is only called by code that does not hold the state lock (else two threads could deadlock).
        self._pass_lock = threading.Lock()
        self.settings_ops = CenterSettingsOps(
            lock=self._lock,
            store=self.store,
            log=self.log,
            readings=self._readings,
            schedule=self.schedule,
            notify=self.notify_store,
        )
        self._reattach()

    # ------------------------------------------------------------------------------------------ settings
    def change_devices(self, enabled: list[str]) -> list[str]:
        """Enable exactly these ``node:gpuN`` labels (DLNest's changeDevices); returns the disabled ones."""
        return self.settings_ops.change_devices(enabled)

    def change_delay(self, seconds: float) -> None:
        self.settings_ops.change_delay(seconds)

    def change_max_task_per_device(self, n: int) -> None:
        self.settings_ops.change_max_task_per_device(n)

    def change_margin(self, margin: float) -> None:
        self.settings_ops.change_margin(margin)

    def change_retries(self, retries: int) -> None:
        """A run's retries when neither ``--retries`` nor its config's ``retries`` key says (>= 0)."""
        self.settings_ops.change_retries(retries)

    def change_notify_webhook(self, url: str) -> None:
        """The cluster's default webhook for word when a task ends ("" clears it); must be http(s)."""
        self.settings_ops.change_notify_webhook(url)

    def get_settings(self) -> SettingsInfo:
        return self.settings_ops.get_settings()

    @property
    def delay_s(self) -> float:
        return self.store.settings.delay_s

    # ------------------------------------------------------------------------------------------ delete
    def del_task(self, task_id: str) -> str:
        """Pending: removed from the queue. Running: asked to stop; it ends CANCELLED when fully gone.
        A sweep id (``S_0001``): every unfinished trial of the sweep, so (:meth:`del_sweep`)."""
        if is_sweep_id(task_id):
            return self.del_sweep(task_id)
        with self._lock:
            record = self._get(task_id)
            if record.status is TaskStatus.PENDING:
                self._set(
                    transition(record, TaskStatus.CANCELLED, at=self.clock(), error="deleted while pending")
                )
                self.log.write(f"{task_id} deleted while pending")
                return f"{task_id} removed from the queue"
            if record.status.is_active():
                self._set(replace(record, cancel_requested=True))
                self.launcher.cancel(task_id)
                self.log.write(f"{task_id} cancelling")
                return f"{task_id} is being stopped"
            return f"{task_id} already ended ({record.status})"

    # ------------------------------------------------------------------------------------------ down / up
    def drain(self, cancel_running: bool = False) -> dict[str, list[str]]:
        """``down`` has begun: launch nothing from now on (persisted, so a center restart keeps draining)
        and, with ``cancel_running``, stop every running task. A run stopped this way before any of its
        ranks started goes back to PENDING, as does one whose cluster goes away before it started.
        Returns ``{"running": [...], "pending": [...]}`` as they were."""
        with self._lock:
            if not self.store.draining:
                self.store.draining = True
                self.log.write("draining: `dlnest-ray down` has begun, nothing new starts")
            running = list(self._running())
            pending = [r.task_id for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
            for r in self.store.tasks.values():
                if r.status is TaskStatus.PENDING and r.wait_reason != DRAINING_REASON:
                    self._set(replace(r, wait_reason=DRAINING_REASON), save=False)
            if cancel_running:
                for r in running:
                    if not r.cancel_requested:
                        self._set(replace(r, cancel_requested=True, cancelled_by_down=True), save=False)
                        self.launcher.cancel(r.task_id)
                        self.log.write(f"{r.task_id} cancelling (down --force)")
            self.store.save()
            return {"running": [r.task_id for r in running], "pending": pending}

    def open_queue(self) -> bool:
        """``up``: end a drain (launches resume). Returns whether the center was draining."""
        with self._lock:
            was = self.store.draining
            if was:
                self.store.draining = False
                self.store.save()
                self.log.write("queue open: launches resume")
        if was:
            self.schedule()
        return was

    @property
    def draining(self) -> bool:
        return self.store.draining

    # ------------------------------------------------------------------------------------------ restart
    def _reattach(self) -> None:
        """After a restart: runs whose supervisor lives on stay RUNNING (it reports to the new center);
        a run whose supervisor is gone ended while the center was down: take its end from the package."""
        alive = self.launcher.alive()
        for record in self._running():
            if record.task_id in alive:
                self.log.write(f"{record.task_id} re-attached")
                if record.cancel_requested:
                    self.launcher.cancel(record.task_id)
                elif record.status is TaskStatus.PREEMPTED or record.stop_reason:  # told again: the word
                    self.launcher.preempt(record.task_id)  # may not have arrived
                continue
            self._settle(record, "found after a restart")
        self.store.save()
        self.schedule()  # runs that ended while the center was down freed their GPUs

    def check_supervisors(self) -> list[str]:
        """While the center runs: a task launched more than :data:`ORPHAN_GRACE_S` ago whose supervisor
        is gone without a report (killed, its process lost) ends as after a restart (:meth:`_settle`:
        its end from its package, or back in the queue, or a retry). Returns those settled."""
        alive = self.launcher.alive()  # a remote read: without the state lock
        settled: list[str] = []
        with self._lock:
            now = self.clock()
            for record in self._running():
                launched = record.started_at if record.started_at is not None else now
                if record.task_id in alive or now - launched < ORPHAN_GRACE_S:
                    continue
                fresh = self.store.tasks.get(record.task_id)  # its report may have come meanwhile
                if fresh is None or not fresh.status.is_active():
                    continue
                log.warning("%s: its supervisor is gone without a report", record.task_id)
                self._settle(fresh, "its supervisor was gone")
                settled.append(record.task_id)
            if settled:
                self.store.save()
        if settled:
            self.schedule()
        return settled

    def _settle(self, record: TaskRecord, how: str) -> None:
        """The end of active ``record`` whose supervisor is gone without a report (state lock held; not
        saved): read from its package, ``how`` says when it was found."""
        seg = package_segment(record)  # read once: it says both whether and how the run ended
        if never_started(record, seg):  # the cluster went away before its run began: it waits again
            reason = DRAINING_REASON if self.store.draining else ""
            self._set(requeue(record, reason=reason), save=False)
            self.log.write(f"{record.task_id} back in the queue: its supervisor ended before the run began")
            return
        stopped_for = (isinstance(seg, Segment) and seg.status == "preempted") or (
            record.kind is TaskKind.ANALYZE and record.status is TaskStatus.PREEMPTED
        )
        if stopped_for and not record.cancel_requested and record.stop_reason:  # stopped early by its
            done = transition(record, TaskStatus.STOPPED, at=self.clock(), error=record.stop_reason)
            self._set(done, save=False)  # sweep's rule, as it was told
            self.log.write(f"{record.task_id} STOPPED ({how}): {record.stop_reason}")
            return
        if stopped_for and not record.cancel_requested:
            self._set(back_in_queue(record, self._resume_point(record.task_id)), save=False)
            self.log.write(f"{record.task_id} back in the queue: preempted ({how})")
            return
        status, error = TaskStatus.FAILED, f"its supervisor ended without a report ({how})"
        if isinstance(seg, Segment) and seg.status == "succeeded":
            status, error = TaskStatus.SUCCEEDED, ""
        elif isinstance(seg, Segment) and seg.error:  # unreadable: its end stays unknown, FAILED as above
            error = seg.error
        elif isinstance(seg, Segment) and not seg.has_ended and self._node_lost(record):
            # its node went away with the run and its supervisor: a retry, as any lost node
            decision = retry_decision(
                record,
                error=f"its node {record.node} was lost",
                reason="node lost",
                resume_from=self._resume_point(record.task_id),
                margin=self.store.settings.margin,
                largest_mb=0,
            )
            if decision.log_line:
                self.log.write(decision.log_line)
            if decision.record is not None:
                self._set(decision.record, save=False)
                return
            error = decision.error
        self._set(transition(record, status, at=self.clock(), error=error), save=False)
        self.log.write(f"{record.task_id} {status} ({how})")

    def _node_lost(self, record: TaskRecord) -> bool:
        """Whether ``record``'s node is no longer among the cluster's nodes (a remote read)."""
        try:
            return record.node is not None and record.node not in self.devices.read({})
        except Exception as e:  # the nodes cannot be read: say nothing rather than guess
            log.warning("%s: reading the cluster's nodes: %s: %s", record.task_id, type(e).__name__, e)
            return False

    # ------------------------------------------------------------------------------------------ queries
    def close(self, wait_s: float = 10.0) -> None:
        """Give notices still being sent up to ``wait_s`` seconds (the center is going away)."""
        self.notifier.close(wait_s)

    def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
        """Running and pending tasks in submit order; with ``include_finished``, every task."""
        with self._lock:
            return [r for r in self.store.tasks.values() if include_finished or not r.status.is_terminal()]

    def task_rows(self, include_finished: bool = False) -> list[dict[str, Any]]:
        """:meth:`get_task_info` as ``tasks`` rows with each started run's last metrics row (read here,
        outside the state lock: the CLI on the fast path then needs no Parquet reader)."""
        return rows_with_metrics(self.get_task_info(include_finished))

    def get_devices_info(self) -> list[DeviceInfo]:
        readings = self._readings()
        with self._lock:
            gpus = self._gpu_states(readings)
            running = self._running()
            reserved = self._reserved()
            return [
                DeviceInfo(
                    node=g.node,
                    gpu=g.index,
                    total_mb=g.total_mb,
                    free_mb=g.free_mb,
                    reserved_mb=reserved.get(g.node, {}).get(g.index, 0),
                    tasks=tuple(r.task_id for r in running if r.node == g.node and g.index in r.gpus),
                    enabled=g.enabled,
                )
                for g in gpus
            ]

    def get_dlnest_output(self, offset: int = 0) -> dict[str, Any]:
        with self._lock:
            return self.log.read(offset)

    def clear(self) -> None:
        """Empty the center's messages (DLNest's clear); the file moves aside to ``center.log.1``."""
        with self._lock:
            self.log.clear()
