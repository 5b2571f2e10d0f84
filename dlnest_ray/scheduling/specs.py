"""Inputs and outputs of the scheduling policy (pure data: no Ray, no NVML, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "Decision",
    "GpuState",
    "Holder",
    "Launch",
    "NodeCpus",
    "Placement",
    "Preempt",
    "Settings",
    "Snapshot",
    "TaskSpec",
    "Wait",
]

DEFAULT_MEMORY_FRACTION = 0.9  # DLNest: a task without --memory needs 90% of a GPU
DEFAULT_MARGIN = 1.15  # a right-sized reservation: the measured peak × this


class Placement(str, Enum):
    """How a task uses devices."""

    CPU = "cpu"  # no GPU; never waits behind GPU tasks
    GPU = "gpu"  # one GPU
    MULTI = "multi"  # one process, several GPUs when one does not fit (DLNest -mc)
    DDP = "ddp"  # one rank per GPU, GPUs of one node

    def __str__(self) -> str:
        return self.value

    @property
    def spreads(self) -> bool:
        return self in (Placement.MULTI, Placement.DDP)


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A pending task's resource request. ``memory_mb`` is the total the run needs (split evenly over
    its GPUs); None means 90% of a GPU. ``gpus`` asks for exactly that many GPUs/ranks. Each rank (one
    process; a DDP run has one per GPU) holds ``cpus_per_rank`` CPUs of its node."""

    task_id: str
    placement: Placement = Placement.GPU
    memory_mb: int | None = None
    gpus: int | None = None
    submitted_at: float = 0.0
    cpus_per_rank: float = 1.0
    priority: int = 0  # served higher first; may preempt strictly lower-priority holders

    def __post_init__(self) -> None:
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError("memory_mb must be positive")
        if self.gpus is not None and (self.gpus < 1 or not self.placement.spreads):
            raise ValueError("gpus needs placement multi or ddp and a count >= 1")
        if self.cpus_per_rank < 0:
            raise ValueError("cpus_per_rank must be 0 or more")

    def cpus_on(self, k: int) -> float:
        """CPUs the task holds on its node when placed on ``k`` GPUs (DDP: one rank per GPU)."""
        return self.cpus_per_rank * (k if self.placement is Placement.DDP else 1)


@dataclass(frozen=True, kw_only=True)
class Holder:
    """A running dlnest-ray task on a GPU and the MB it holds there for its whole run: the larger of
    its reservation (``mb_per_gpu``) and its measured peak per GPU."""

    task_id: str
    mb: int
    priority: int = 0
    preemptible: bool = False  # may be stopped for a higher-priority task (not --no-preempt, not busy)
    started_at: float = 0.0  # among equally few victims, the most recently started go first
    stopping_for: str = ""  # already preempted for this task: it is stopping and frees its share soon
    cpus: float = 0.0  # CPUs it holds on its node (freed with it)


@dataclass(frozen=True, kw_only=True)
class GpuState:
    """One GPU as the policy sees it. ``free_mb``: NVML's free memory (what other programs use counts
    there). ``recent_mb``: memory of runs launched within the cooldown that may not have allocated yet
    (not yet visible in ``free_mb``). ``holders``: every dlnest-ray task running on it, each with what it
    holds; they keep their share for their whole run, whatever they use at the moment."""

    node: str
    index: int
    total_mb: int
    free_mb: int
    tasks: int = 0
    enabled: bool = True
    recent_mb: int = 0
    holders: tuple[Holder, ...] = ()

    @property
    def held_mb(self) -> int:
        """MB the running dlnest-ray tasks hold on this GPU (sum over ``holders``)."""
        return sum(h.mb for h in self.holders)

    @property
    def usable_mb(self) -> int:
        """MB a new task may take: NVML free less the recent launches, and never more than the total
        less what the running tasks hold (may be negative when over-committed)."""
        return min(self.free_mb - self.recent_mb, self.total_mb - self.held_mb)

    @property
    def label(self) -> str:
        return f"{self.node}:gpu{self.index}"


@dataclass(frozen=True, kw_only=True)
class NodeCpus:
    """CPUs of one node that no Ray work holds (placement groups of running tasks included) and that no
    task launched but not yet placed by Ray will take."""

    node: str
    free: float


@dataclass(frozen=True, kw_only=True)
class Settings:
    max_tasks_per_device: int = 10_000
    starvation_s: float = 3600.0  # the oldest task waiting longer reserves the GPUs it waits for
    memory_fraction: float = DEFAULT_MEMORY_FRACTION


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """What a pass sees. ``cpus``: free CPUs per node; a node not listed is not limited by CPUs (a
    device source that cannot tell). ``draining``: ``down`` has begun, nothing may launch."""

    gpus: tuple[GpuState, ...]
    settings: Settings = field(default_factory=Settings)
    now: float = 0.0
    cpus: tuple[NodeCpus, ...] = ()
    draining: bool = False


@dataclass(frozen=True, kw_only=True)
class Launch:
    """Start ``task_id`` on ``node`` with these GPU indices, reserving ``mb_per_gpu`` on each.
    A CPU task has no GPUs; its ``node`` is the one with the most free CPUs, or None when no node's CPUs
    are known (Ray then picks one)."""

    task_id: str
    node: str | None
    gpus: tuple[int, ...]
    mb_per_gpu: int


@dataclass(frozen=True, kw_only=True)
class Wait:
    task_id: str
    reason: str
    reserving: tuple[str, ...] = ()  # GPU labels held back for this (starving) task


@dataclass(frozen=True, kw_only=True)
class Preempt:
    """``task_id`` fits nowhere, but stopping ``victims`` (running, strictly lower priority, all on
    ``node``) would let it fit there: stop them at their next epoch boundary; ``task_id`` waits with
    ``reason`` until they have."""

    task_id: str
    node: str
    victims: tuple[str, ...]
    reason: str


Decision = Launch | Wait | Preempt
