"""Tasks: status values, the one table of allowed transitions, and the task record (pure data).

PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED; a pending task may also be CANCELLED (deleted) or
FAILED (its launch failed). A running task preempted for a higher-priority one is PREEMPTED while it
stops at its next epoch boundary (it still holds its GPUs), then PENDING again as a continuation, unless
it ended meanwhile. A sweep trial that an early-stopping rule stops (issue 15) ends STOPPED: a running (or
PREEMPTED) one once it has stopped at its epoch boundary, a pending one at once. A running task whose run
never started a rank goes back to PENDING
(:func:`requeue`: the cluster went away under it, or ``down`` stopped it before it began), as does a
running task whose attempt failed for a retryable reason (:func:`retry_label` says which attempt it is
on; the center's retry rules are in ``actors/center_retries.py``). Every status
change goes through :func:`transition`, which refuses any other move, so a late or duplicate report (a
supervisor re-attached after a center restart, say) cannot resurrect a finished task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from .errors import DlnestError
from .scheduling.specs import Placement, TaskSpec

__all__ = [
    "NOT_STARTED_PHASES",
    "InvalidTransition",
    "TaskKind",
    "TaskRecord",
    "TaskStatus",
    "preempted_label",
    "requeue",
    "retry_label",
    "transition",
]

NOT_STARTED_PHASES = ("", "starting", "waiting for resources")  # a running task's supervisor: no rank yet


class TaskStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"  # stopping for a higher-priority task; then PENDING again
    STOPPED = "STOPPED"  # a sweep trial stopped early by the sweep's stop rule (it can be continued)

    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def is_active(self) -> bool:
        """Launched and not ended: it holds its node's GPUs and CPUs (RUNNING or PREEMPTED)."""
        return self in _ACTIVE

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.STOPPED})
_ACTIVE = frozenset({TaskStatus.RUNNING, TaskStatus.PREEMPTED})
_ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset(
        {TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED, TaskStatus.STOPPED}
    ),
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.PENDING,
            TaskStatus.PREEMPTED,
            TaskStatus.STOPPED,
        }
    ),
    TaskStatus.PREEMPTED: frozenset(
        {
            TaskStatus.SUCCEEDED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.PENDING,
            TaskStatus.STOPPED,
        }
    ),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.STOPPED: frozenset(),
}


class TaskKind(str, Enum):
    """A training run (``T_0007``) or an analyzer (``A_0003``): the letter its id starts with."""

    TRAIN = "T"
    ANALYZE = "A"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, task_id: str) -> TaskKind | None:
        """The kind of a task id (``T_…``/``A_…`` followed by digits), or None for anything else."""
        prefix, sep, number = task_id.partition("_")
        if not sep or not number.isdigit():
            return None
        try:
            return cls(prefix)
        except ValueError:
            return None


class InvalidTransition(DlnestError):
    """A status change the state machine does not allow."""


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    """Everything the center knows about one task; persisted as JSON."""

    task_id: str
    kind: TaskKind = TaskKind.TRAIN
    status: TaskStatus = TaskStatus.PENDING
    package: str
    description: str = ""
    name: str = ""  # short label for tables and the Ray dashboard (the project's folder name)
    placement: Placement = Placement.GPU
    memory_mb: int | None = None
    gpus_requested: int | None = None
    resume: bool = False
    ckpt_id: int = -1
    scripts: str = ""  # an analyzer's scripts folder
    submitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    node: str | None = None
    gpus: tuple[int, ...] = ()
    mb_per_gpu: int = 0
    gpu_total_mb: int = 0  # memory of the chosen GPUs: a placement-group bundle asks mb/total of a GPU
    wait_reason: str = ""
    cancel_requested: bool = False  # `del` of a running task: its end is recorded as CANCELLED
    cancelled_by_down: bool = False  # the cancel came from `down --force`: an unstarted run is requeued
    phase: str = ""  # a RUNNING task's supervisor: starting, waiting for resources, running, stopping
    running_at: float | None = None  # when its ranks (or analyzer) really started: the `ran` clock
    cpus_per_rank: float = 1.0  # CPUs each rank (an analyzer: the process) holds in Ray's accounting
    # memory (issue 13): chosen by dlnest-ray (no --memory, or --memory auto) and where its number came from
    memory_auto: bool = False
    memory_source: str = ""
    fingerprint: str = ""  # model code + config less memory_neutral_keys: runs that use the same memory
    first_mb_per_gpu: int = 0  # the reservation at launch, before right-sizing lowered it
    peak_mb: int | None = None  # the largest measured peak on one GPU (torch reserved + CUDA context)
    right_sized: bool = False  # the reservation was lowered to peak × margin after the first epoch
    # retries (issue 14): how many retries it may have, the attempt it is on (1-based), and why each
    # earlier attempt ended (``node lost``, ``worker died``, ``out of memory``...)
    retries: int = 2
    attempt: int = 1
    attempt_reasons: tuple[str, ...] = ()
    # priorities (issue 14): higher is served first and may preempt lower ones (unless ``no_preempt``);
    # ``preempted_by``: the task it was last preempted for, ``preemptions``: how often that happened
    priority: int = 0
    preempted_by: str = ""
    no_preempt: bool = False
    preemptions: int = 0
    phase_at: float | None = None  # when ``phase`` last changed (an analyzer idle since then may yield)
    # sweeps (issue 15): the sweep a trial belongs to (``S_0001``), its varying values in short
    # (``lr=0.01 bs=64``), and why the sweep's stop rule stopped it (set when the rule decides; the run
    # then stops at its epoch boundary and ends STOPPED with this as its error)
    sweep: str = ""
    sweep_label: str = ""
    stop_reason: str = ""
    error: str = ""
    output_tail: tuple[str, ...] = field(default_factory=tuple)

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            task_id=self.task_id,
            placement=self.placement,
            memory_mb=self.memory_mb,
            gpus=self.gpus_requested,
            submitted_at=self.submitted_at,
            cpus_per_rank=self.cpus_per_rank,
            priority=self.priority,
        )

    @property
    def world_size(self) -> int:
        return len(self.gpus) if self.placement is Placement.DDP and self.gpus else 1

    @property
    def ranks(self) -> int:
        """Processes the run will have: the requested DDP ranks before placement, then the placed ones."""
        if self.gpus:
            return self.world_size
        return (self.gpus_requested or 1) if self.placement is Placement.DDP else 1

    @property
    def cpus(self) -> float:
        """CPUs the whole task holds while it runs (one bundle of ``cpus_per_rank`` per rank)."""
        return self.cpus_per_rank * self.ranks

    @property
    def cancelling(self) -> bool:
        """Asked to stop and not ended yet."""
        return self.cancel_requested and not self.status.is_terminal()

    @property
    def attempts(self) -> int:
        """The most attempts it may have: the first and its retries."""
        return self.retries + 1

    @property
    def phase_started(self) -> bool:
        """Its ranks (or analyzer) have started: the supervisor is past placing them."""
        return self.phase not in NOT_STARTED_PHASES

    def to_json(self) -> dict[str, Any]:
        """The persisted form (``center.json``)."""
        d = asdict(self)
        d["kind"], d["status"], d["placement"] = self.kind.value, self.status.value, self.placement.value
        d["gpus"], d["output_tail"] = list(self.gpus), list(self.output_tail)
        d["attempt_reasons"] = list(self.attempt_reasons)
        return d

    def to_row(self) -> dict[str, Any]:
        """The form ``tasks --json`` prints (an interface: keys only ever added): the persisted form and
        ``cancelling`` and ``attempts`` (the most it may have: retries + 1)."""
        return {**self.to_json(), "cancelling": self.cancelling, "attempts": self.attempts}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskRecord:
        d = dict(d)
        d["kind"] = TaskKind(d.get("kind", TaskKind.TRAIN.value))
        d["status"] = TaskStatus(d.get("status", TaskStatus.PENDING.value))
        d["placement"] = Placement(d.get("placement", Placement.GPU.value))
        d["gpus"], d["output_tail"] = tuple(d.get("gpus", ())), tuple(d.get("output_tail", ()))
        d["attempt_reasons"] = tuple(d.get("attempt_reasons", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def transition(record: TaskRecord, new: TaskStatus, *, at: float, **changes: Any) -> TaskRecord:
    """``record`` moved to ``new`` at time ``at`` (with other fields changed), or InvalidTransition."""
    if new not in _ALLOWED[record.status]:
        raise InvalidTransition(f"task {record.task_id} cannot go from {record.status} to {new}")
    stamp: dict[str, Any] = {}
    if new is TaskStatus.RUNNING:
        stamp["started_at"] = at
        stamp["wait_reason"] = ""
    if new.is_terminal():
        stamp["ended_at"] = at
    return replace(record, status=new, **stamp, **changes)


def requeue(record: TaskRecord, *, reason: str) -> TaskRecord:
    """A RUNNING ``record`` whose run never started a rank, back to PENDING in its original place (its
    submit time is kept), with its placement forgotten; ``reason`` becomes its wait reason."""
    moved = transition(record, TaskStatus.PENDING, at=0.0)
    return replace(
        moved,
        started_at=None,
        running_at=None,
        node=None,
        gpus=(),
        mb_per_gpu=0,
        first_mb_per_gpu=0,
        right_sized=False,
        gpu_total_mb=0,
        phase="",
        phase_at=None,
        cancel_requested=False,
        cancelled_by_down=False,
        wait_reason=reason,
    )


def retry_label(record: TaskRecord) -> str:
    """``attempt 2/3 (node lost)`` for a task on its second or later attempt (with why the one before
    ended), else ""."""
    if record.attempt <= 1:
        return ""
    why = f" ({record.attempt_reasons[-1]})" if record.attempt_reasons else ""
    return f"attempt {record.attempt}/{record.attempts}{why}"


def preempted_label(record: TaskRecord) -> str:
    """``preempted by T_0012`` for a task stopping (PREEMPTED) or waiting (PENDING) after a preemption,
    else ""."""
    if record.preempted_by and record.status in (TaskStatus.PREEMPTED, TaskStatus.PENDING):
        return f"preempted by {record.preempted_by}"
    return ""
