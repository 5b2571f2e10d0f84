"""The center's shared state and the helpers its parts use (:mod:`.center` assembles them).

:class:`CenterCore` declares what every part of the center reads and writes — the store, the launcher,
the device source, the clock, the log, the locks — and the few methods they all use (``_get``, ``_set``,
``_notify``, ``_running``, ``_settings``). The parts are mixins over it: submitting
(:mod:`.center_submit`), the runs' reports (:mod:`.center_reports`) and scheduling
(:mod:`.center_schedule`); :class:`~.center.Center` puts them together with its own operations.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable

from ..devices import GpuInfo
from ..errors import DlnestError
from ..savepack.package import SavePackage
from ..savepack.records import Segment
from ..scheduling.specs import GpuState, Launch, Preempt, Settings, Wait
from ..tasks import (
    NOT_STARTED_PHASES,
    TaskKind,
    TaskRecord,
    preempted_label,
)
from .notify import Notice, Notifier, NotifyStore, notice_reason
from .ports import DeviceSource, Launcher
from .store import CenterStore, EnvStore, LogBuffer

__all__ = [
    "ANALYZER_CPUS_ENV",
    "CPUS_ENV",
    "NO_CHECKPOINT",
    "UNREADABLE",
    "CenterCore",
    "Unreadable",
    "cpus_from_env",
    "never_started",
    "package_segment",
    "ran_in_package",
    "segment_peak",
]


log = logging.getLogger(__name__)

NO_CHECKPOINT = -2  # DLNest's "build the model without loading a checkpoint"
CPUS_ENV = "DLNEST_RAY_CPUS_PER_RANK"  # CPUs each rank holds (read where the center runs)
ANALYZER_CPUS_ENV = "DLNEST_RAY_ANALYZER_CPUS"  # CPUs each analyzer holds


def cpus_from_env(name: str) -> float:
    raw = os.environ.get(name, "1")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DlnestError(f"{name}={raw!r} where the center runs: it must be a positive number of CPUs")
    return value


class Unreadable:
    """The package could not be read (logged): its run is taken as started, never requeued."""


UNREADABLE = Unreadable()


def package_segment(record: TaskRecord) -> Segment | Unreadable | None:
    """The last segment a rank of this task recorded in its package (None: no rank ever started)."""
    try:
        return SavePackage.open(record.package).segment_of(record.task_id)
    except DlnestError as e:
        log.warning("%s: cannot read its package (%s): taken as started, never requeued", record.task_id, e)
        return UNREADABLE


def segment_peak(record: TaskRecord) -> int | None:
    """The peak (MB on one GPU) the task's last run segment recorded: it includes what an epoch that
    never reported (one that ran out of memory) reached. None when none was recorded or readable."""
    if record.kind is not TaskKind.TRAIN or not record.gpus:
        return None
    try:
        seg = SavePackage.open(record.package).segment_of(record.task_id)
    except DlnestError as e:
        log.debug("%s: no peak from its package: %s", record.task_id, e)
        return None
    return None if seg is None or not seg.peak_gpu_mb else math.ceil(seg.peak_gpu_mb)


def ran_in_package(record: TaskRecord) -> bool:
    """Whether a rank of this training task started its run (it records a segment in the package)."""
    return package_segment(record) is not None


def never_started(record: TaskRecord, segment: Segment | Unreadable | None) -> bool:
    """A RUNNING task none of whose ranks (or whose analyzer) ever started: it may go back to PENDING.
    ``segment``: what :func:`package_segment` read for it."""
    if record.kind is TaskKind.ANALYZE:
        return record.phase in NOT_STARTED_PHASES
    return segment is None


class CenterCore:
    """State and helpers shared by the center's parts (set up by :class:`~.center.Center`)."""

    _lock: threading.RLock
    _pass_lock: threading.Lock
    store: CenterStore
    envs: EnvStore
    launcher: Launcher
    devices: DeviceSource
    clock: Callable[[], float]
    log: LogBuffer
    notify_store: NotifyStore
    notifier: Notifier
    _gpus: tuple[GpuState, ...]

    def schedule(self) -> list[Launch | Wait | Preempt]:
        """One scheduling pass (:mod:`.center_schedule`)."""
        raise NotImplementedError

    def _readings(self) -> dict[str, tuple[GpuInfo, ...]]:
        raise NotImplementedError

    def _gpu_states(self, readings: dict[str, tuple[GpuInfo, ...]]) -> tuple[GpuState, ...]:
        raise NotImplementedError

    def _resume_point(self, task_id: str) -> tuple[bool, int] | None:
        raise NotImplementedError

    def del_task(self, task_id: str) -> str:
        """Delete a task, or every unfinished trial of a sweep (:mod:`.center`)."""
        raise NotImplementedError

    def _trial_epoch(self, task_id: str) -> None:
        """A sweep trial has ended an epoch: its sweep's stop rule is applied (:mod:`.center_sweeps`)."""

    def _settings(self) -> Settings:
        s = self.store.settings
        return Settings(max_tasks_per_device=s.max_tasks_per_device, starvation_s=s.starvation_s)

    def _running(self) -> list[TaskRecord]:
        """Launched and not ended: RUNNING, or PREEMPTED and stopping (they hold their share)."""
        return [r for r in self.store.tasks.values() if r.status.is_active()]

    def _get(self, task_id: str) -> TaskRecord:
        record = self.store.tasks.get(task_id)
        if record is None:
            raise DlnestError(f"no task {task_id!r}; `dlnest-ray tasks --all` lists them")
        return record

    def _set(self, record: TaskRecord, *, save: bool = True) -> None:
        before = self.store.tasks.get(record.task_id)
        self.store.tasks[record.task_id] = record
        if save:
            self.store.save()
        if record.status.is_terminal():  # its environment served its runs: nothing secret lingers
            if before is not None and not before.status.is_terminal():
                self._notify(record)
            self.envs.drop(record.task_id)

    def _notify(self, record: TaskRecord, *, final: bool = True) -> None:
        """Hand word of a training task's end (or, not ``final``, of its preemption) to the notifier (its
        webhook: the run's own, else the cluster's; its e-mail: the run's); at its end, drop the run's
        notification settings. Never raises, never waits: the notifier reads the metrics and sends in its
        thread."""
        try:
            own = self.notify_store.get(record.task_id)
            webhook = own.webhook or self.notify_store.webhook
            if record.kind is TaskKind.TRAIN and (webhook or own.email):
                self.notifier.notify(
                    Notice(
                        task_id=record.task_id,
                        status=str(record.status),
                        reason=notice_reason(record.error) if final else preempted_label(record),
                        error=record.error[:2000],
                        package=record.package,
                        name=record.name,
                        attempt=int(getattr(record, "attempt", 1)),
                        webhook=webhook,
                        email=own.email,
                    )
                )
        except Exception as e:  # an unreadable settings file: say so, the task's end stands
            log.exception("%s: no notice", record.task_id)
            self.log.write(f"notify: no notice for {record.task_id}: {e}")
        finally:
            if final:
                self.notify_store.drop(record.task_id)
