"""The center's priority and preemption rules (issue 14), as functions of task records: no Ray, no files.

* Every task has a ``priority`` (an integer, default 0): the policy serves higher first and may preempt
  strictly lower-priority running tasks (:class:`~dlnest_ray.scheduling.specs.Preempt`).
* A running training task may be preempted unless it was submitted with ``--no-preempt``; an analyzer
  only once it has been idle (no script running or queued) for :data:`ANALYZER_IDLE_S` seconds.
* A preempted task is PREEMPTED while it stops (:func:`preempted`): a run at the end of the epoch it is
  in, after a checkpoint of that epoch; an analyzer at once. Then it goes back to PENDING in its
  original place (:func:`back_in_queue`): a run as a continuation from that checkpoint, an analyzer to
  load again. Its retries are untouched: a preemption is no failure.
"""

from __future__ import annotations

from dataclasses import replace

from ..scheduling.specs import Holder
from ..tasks import TaskKind, TaskRecord, TaskStatus, requeue, transition

__all__ = [
    "ANALYZER_IDLE_S",
    "back_in_queue",
    "holder",
    "preempted",
    "preemptible",
]

ANALYZER_IDLE_S = 120.0  # an analyzer idle this long (no script running or queued) may be preempted
IDLE_PHASE = "ready"  # an analyzer's phase while no script runs (``busy`` while one does)


def preemptible(record: TaskRecord, now: float) -> bool:
    """Whether the running ``record`` may be stopped for a higher-priority task now."""
    if record.status is not TaskStatus.RUNNING or record.no_preempt or record.cancel_requested:
        return False
    if record.kind is TaskKind.TRAIN:
        return True
    idle_since = record.phase_at
    return record.phase == IDLE_PHASE and idle_since is not None and now - idle_since >= ANALYZER_IDLE_S


def holder(record: TaskRecord, mb: int, now: float) -> Holder:
    """The policy's view of the active ``record`` holding ``mb`` on one of its GPUs."""
    return Holder(
        task_id=record.task_id,
        mb=mb,
        priority=record.priority,
        preemptible=preemptible(record, now),
        started_at=record.started_at or 0.0,
        stopping_for=record.preempted_by if record.status is TaskStatus.PREEMPTED else "",
        cpus=record.cpus,
    )


def preempted(record: TaskRecord, by: str, at: float) -> TaskRecord:
    """The running ``record`` preempted for task ``by``: PREEMPTED (it still holds its share) until its
    supervisor reports that it has stopped."""
    return transition(
        record, TaskStatus.PREEMPTED, at=at, preempted_by=by, preemptions=record.preemptions + 1
    )


def back_in_queue(record: TaskRecord, resume_from: tuple[bool, int] | None) -> TaskRecord:
    """The preempted ``record`` (it has stopped) back to PENDING in its original place, its placement
    forgotten: a run continues from ``resume_from`` ((True, -1): the latest valid checkpoint, the one
    it took when it stopped; (False, -1): over again, it had none; None: as it was, it never started)."""
    moved = requeue(record, reason=f"preempted by {record.preempted_by}")
    resume, ckpt_id = resume_from if resume_from is not None else (record.resume, record.ckpt_id)
    return replace(moved, resume=resume, ckpt_id=ckpt_id, error="", output_tail=())
