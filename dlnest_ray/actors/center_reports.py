"""The reports running tasks send the center (a mixin of :class:`~.center.Center`): a run's end (with
retries and preemption: back in the queue; a sweep trial its rule stopped: STOPPED), each epoch's memory
peak (right-sizing; a sweep trial's rule is applied then), and the phase its supervisor is in.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..errors import DlnestError
from ..savepack.package import SavePackage
from ..scheduling.policy import DRAINING_REASON
from ..tasks import (
    NOT_STARTED_PHASES,
    TaskKind,
    TaskStatus,
    requeue,
    transition,
)
from .center_core import (
    CenterCore,
    ran_in_package,
    segment_peak,
)
from .center_memory import (
    follow_twin,
    right_sized,
    with_peak,
)
from .center_preempt import back_in_queue
from .center_retries import retry_decision

__all__ = ["ReportOps"]

log = logging.getLogger(__name__)


class ReportOps(CenterCore):
    """What running tasks tell the center: their end, their memory after each epoch, their phase."""

    # ------------------------------------------------------------------------------------------ reports
    def task_finished(
        self,
        task_id: str,
        status: str,
        error: str = "",
        output_tail: list[str] | None = None,
        reason: str = "",
    ) -> None:
        """A run's supervisor reports its end, after its ranks are gone and its placement group removed.
        ``reason``: why a FAILED attempt ended when it may be retried (``node lost``, ``worker died``,
        ``killed by signal 9``, ``placement group lost``, ``out of memory``; "" for the user's own error):
        while retries are left it goes back to PENDING as a continuation (:mod:`.center_retries`). A sweep
        trial its rule stopped (``stop_reason``) that reports PREEMPTED (or a retryable failure) is STOPPED
        with that reason (:mod:`.center_sweeps`)."""
        resume_from = (
            self._resume_point(task_id)
            if (status == TaskStatus.FAILED.value and reason) or status == TaskStatus.PREEMPTED.value
            else None
        )
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is None or record.status.is_terminal():
                return  # a duplicate report (e.g. after a restart): the first one counted
            try:
                final = TaskStatus(status)
            except ValueError:
                raise DlnestError(f"unknown task status {status!r} reported for {task_id}") from None
            if (
                record.cancelled_by_down
                and final is not TaskStatus.SUCCEEDED
                and record.kind is TaskKind.TRAIN
                and not ran_in_package(record)
            ):  # `down --force` stopped it before any rank began: it waits for the next `up`
                self._set(requeue(record, reason=DRAINING_REASON))
                self.log.write(f"{task_id} back in the queue: stopped by `down` before it started")
                return
            if record.cancel_requested and final is not TaskStatus.SUCCEEDED:
                final = TaskStatus.CANCELLED
            stopping = final is TaskStatus.PREEMPTED or (final is TaskStatus.FAILED and bool(reason))
            if record.stop_reason and stopping:  # its sweep's rule stopped it: it ends here, no retry
                final, error = TaskStatus.STOPPED, record.stop_reason
            if final is TaskStatus.PREEMPTED:  # it stopped for a higher-priority task: it waits again
                back = back_in_queue(with_peak(record, segment_peak(record)), resume_from)
                self._set(back)
                where = "from the checkpoint it took" if back.resume else "from the start"
                by = record.preempted_by
                self.log.write(f"{task_id} back in the queue: preempted by {by}, resumes {where}")
                final = TaskStatus.PENDING
            record = with_peak(record, segment_peak(record))  # e.g. the peak an out-of-memory run hit
            tail = tuple(output_tail or ())
            if final is TaskStatus.FAILED:
                decision = retry_decision(
                    record,
                    error=error,
                    reason=reason,
                    resume_from=resume_from,
                    margin=self.store.settings.margin,
                    largest_mb=max((g.total_mb for g in self._gpus), default=0),
                )
                if decision.log_line:
                    self.log.write(decision.log_line)
                if decision.record is not None:  # RUNNING → PENDING: it never ended, nothing to announce
                    self._set(decision.record)
                    final = TaskStatus.PENDING
                error = decision.error
            if final is not TaskStatus.PENDING:
                self._set(transition(record, final, at=self.clock(), error=error, output_tail=tail))
                self.log.write(f"{task_id} {final}" + (f": {error}" if error else ""))
        self.schedule()

    def _resume_point(self, task_id: str) -> tuple[bool, int] | None:
        """Where a retry of ``task_id`` starts (read without the state lock: it verifies checkpoints):
        (True, -1) from the latest valid checkpoint; (False, -1) over again in the same package when it has
        none; None when its attempt never started (it keeps its own start) or the package is unreadable."""
        with self._lock:
            record = self.store.tasks.get(task_id)
        if record is None or record.kind is not TaskKind.TRAIN:
            return None
        try:
            pkg = SavePackage.open(record.package)
            if pkg.segment_of(task_id) is None:
                return None
            return (True, -1) if pkg.latest_valid_id() is not None else (False, -1)
        except DlnestError as e:
            log.warning("%s: cannot read its package for a retry (%s): it keeps its own start", task_id, e)
            return None

    def rank_memory(self, task_id: str, rank: int, epoch: int, peak_mb: int | None) -> int:
        """A rank of a running task has ended epoch ``epoch`` with ``peak_mb`` (the largest over its ranks,
        MB on one GPU; None on CPU). Keeps the peak; after the first epoch an auto task is right-sized and
        pending twins follow its peak; for a sweep trial (rank 0), the sweep's stop rule is applied.
        Returns the rank's reservation now (its cap; 0: none)."""
        changed = False
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is None or not record.status.is_active():
                return 0
            margin = self.store.settings.margin
            updated = with_peak(record, peak_mb)
            sized = right_sized(updated, margin)
            if sized is not None:
                updated = sized
                self.log.write(
                    f"{task_id} right-sized after epoch {epoch}: {record.mb_per_gpu} → {sized.mb_per_gpu} MB"
                    f" per GPU (peak {sized.peak_mb} MB × {margin:g})"
                )
            if updated != record:
                self._set(updated, save=False)
                changed = sized is not None and sized.mb_per_gpu < record.mb_per_gpu
                for other in list(self.store.tasks.values()):
                    follows = follow_twin(other, updated, margin)
                    if follows is not None:
                        self._set(follows, save=False)
                        self.log.write(
                            f"{other.task_id} now asks {follows.memory_mb} MB: {follows.memory_source}"
                        )
                        changed = True
                self.store.save()
            cap = updated.mb_per_gpu
            trial = bool(updated.sweep) and rank == 0
        if changed:
            self._memory_freed()
        if trial:  # a sweep's trial: its rule looks at the trials' curves now
            self._trial_epoch(task_id)
        return cap

    def _memory_freed(self) -> None:
        """Reservations went down or estimates changed: place waiting tasks into what was freed."""
        self.schedule()

    def task_note(self, task_id: str, line: str) -> None:
        """A task's supervisor says something about it for the log (e.g. how its rank started)."""
        with self._lock:
            if task_id in self.store.tasks:
                self.log.write(f"{task_id} {line}")

    def task_phase(self, task_id: str, phase: str) -> None:
        """A running task's supervisor says where it is (e.g. waiting for Ray to free resources)."""
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is not None and record.status.is_active() and record.phase != phase:
                now = self.clock()
                started = record.running_at
                if started is None and phase not in NOT_STARTED_PHASES:
                    started = now  # its ranks (or analyzer) run now: the `ran` clock starts
                self._set(replace(record, phase=phase, running_at=started, phase_at=now))
