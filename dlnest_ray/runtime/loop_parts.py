"""Pieces of the training loop that hold no loop state: options and result, the stop check, moving
batches to the device, calling user methods the way DLNest did, and small describers."""

from __future__ import annotations

import copy
import inspect
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..savepack.outputs import attempt_line, marker_line
from .aliases import overrides
from .bases import LifeCycleBase
from .output import ConsoleSink
from .status import EnvType, RunningStatus

__all__ = [
    "PreemptRequested",
    "StopCheck",
    "StopRequested",
    "TrainObserver",
    "TrainOptions",
    "TrainResult",
    "call_visualize",
    "describe",
    "len_or_none",
    "mark_output",
    "max_over_ranks",
    "move_to_device",
    "overrides_aborting",
]


class TrainObserver(Protocol):
    """Progress callbacks for a foreground display (called on rank 0 only)."""

    def epoch_started(self, epoch: int, total_steps: int | None) -> None: ...
    def step_done(self, epoch: int, iter: int) -> None: ...
    def epoch_finished(self, epoch: int, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    resume: bool = False
    ckpt_id: int = -1  # with resume: -1 = latest valid checkpoint
    cpu: bool = False
    gpus: tuple[int, ...] | None = None
    console: bool | ConsoleSink = False  # also show the output on the terminal
    capture_output: bool = True  # fd-level tee into _output*.txt
    observer: TrainObserver | None = None
    async_checkpoints: bool = True
    description: str = ""
    stop_file: str | None = None  # when this file exists, the run stops as if interrupted (dlnest-ray del)
    # when this file exists, the run is preempted: at the end of the epoch it is in, it saves a checkpoint
    # (pinned: kept until the run has resumed past it) and stops with PreemptRequested
    preempt_file: str | None = None
    task_id: str | None = None  # the queued task this run belongs to, recorded in its segment
    # GPU memory (runtime.memory): this rank's reservation on its GPU when it starts, enforced as a cap
    # (None: no cap); ``memory_report(epoch, peak_mb)`` is called on every rank after each epoch has ended
    # (training, validation and save) with the peak over all ranks (None when nothing is measured) and
    # returns the rank's new reservation, applied as the cap at once, or None for "unchanged" (an
    # exception from it fails the run); ``memory_margin`` scales the out-of-memory line's suggestion.
    memory_cap_mb: int | None = None
    memory_report: Callable[[int, int | None], int | None] | None = None
    memory_margin: float = 1.15
    # a queued task's retry (issue 14): its attempt (1: the first) and why the attempt before ended
    attempt: int = 1
    retry_reason: str = ""
    warm_start: bool = False  # the rank started in a warm rank process (actors/warm.py): said in the segment


class StopRequested(KeyboardInterrupt):
    """The run was asked to stop (its stop file appeared): handled like Ctrl-C. Once the run has wound
    down, its message says where it stopped (``stopped at epoch 2 by request; checkpoint 1 kept``)."""


class PreemptRequested(StopRequested):
    """The run was preempted (its preempt file appeared) and stopped at an epoch boundary, after saving
    a checkpoint of that epoch (``preempted after epoch 2; checkpoint 3 kept``)."""


class StopCheck:
    """Looks for the stop file: between steps at most twice a second in a single process; under DDP only
    at epoch starts, agreed by all ranks (a rank that stopped alone would hang its peers' collectives)."""

    INTERVAL_S = 0.5

    def __init__(self, path: str | None, status: RunningStatus, preempt_path: str | None = None) -> None:
        self.path = path
        self.preempt_path = preempt_path
        self.ddp = status.env is EnvType.DDP
        self.status = status
        self._next = 0.0

    def step(self) -> None:
        if self.path is None or self.ddp:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.INTERVAL_S
            if os.path.exists(self.path):
                raise StopRequested(f"stop requested ({self.path})")

    def epoch(self) -> None:
        if self.path is None:
            return
        flag = os.path.exists(self.path)
        if self.ddp:
            import torch
            import torch.distributed as tdist

            from .distributed import all_reduce

            t = torch.tensor([1.0 if flag else 0.0], device=self.status.device)
            all_reduce(t, tdist.ReduceOp.MAX)
            flag = bool(t.item())
        if flag:
            raise StopRequested(f"stop requested ({self.path})")

    def preempt_due(self) -> bool:
        """Whether the run is preempted (its preempt file exists); under DDP agreed by all ranks, so every
        rank must call this at the same point of an epoch."""
        if self.preempt_path is None:
            return False
        flag = os.path.exists(self.preempt_path)
        if self.ddp:
            import torch
            import torch.distributed as tdist

            from .distributed import all_reduce

            t = torch.tensor([1.0 if flag else 0.0], device=self.status.device)
            all_reduce(t, tdist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    package: Path
    finished_epoch: int
    global_step: int
    last_checkpoint: int | None


def move_to_device(data: Any, device: Any) -> Any:
    """Tensors, also nested in lists/tuples/namedtuples/dicts, moved to ``device``; other values kept."""
    if hasattr(data, "to") and hasattr(data, "device"):
        return data.to(device, non_blocking=True)
    if isinstance(data, list):
        return [move_to_device(d, device) for d in data]
    if isinstance(data, tuple):
        moved = [move_to_device(d, device) for d in data]
        return type(data)(*moved) if hasattr(data, "_fields") else tuple(moved)
    if isinstance(data, dict):
        out = copy.copy(data)  # keeps the dict's type and, for a defaultdict, its factory
        for k, v in data.items():
            out[k] = move_to_device(v, device)
        return out
    return data


def call_visualize(model: Any, epoch: int, iter: int, log: Mapping[str, Any]) -> None:
    """``model.visualize`` by keyword, as DLNest called it (real code orders the parameters its own
    way: ``visualize(self, log, iter, epoch)``); positionally when the method names them otherwise."""
    method = model.visualize
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin or C method: no signature to read
        params = []
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if takes_kwargs or {"epoch", "iter", "log"} <= {p.name for p in params}:
        method(epoch=epoch, iter=iter, log=log)
    else:
        method(epoch, iter, log)


def mark_output(path: Path, task_id: str, attempt: int = 1, retry_reason: str = "") -> None:
    """Append the task's marker line (on a line of its own) to the output file it is about to write; on
    a retry (``attempt`` > 1) followed by ``== attempt 2: node lost ==`` (:func:`attempt_line`)."""
    lead = ""
    if path.exists() and path.stat().st_size > 0:  # a new or empty file needs no line break first
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            lead = "" if f.read(1) == b"\n" else "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{lead}{marker_line(task_id)}\n")
        if attempt > 1:
            f.write(f"{attempt_line(attempt, retry_reason)}\n")


def overrides_aborting(life_cycle: LifeCycleBase) -> bool:
    """Whether the user's life cycle has a ``train_aborting`` (or DLNest's ``trainAborting``, which the
    aliases route to it) of its own."""
    return overrides(life_cycle, "train_aborting", LifeCycleBase)


def len_or_none(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def max_over_ranks(value: int | None, status: RunningStatus) -> int | None:
    """The largest ``value`` over the ranks (an all-reduce MAX under DDP, which every rank must call;
    None counts as nothing); outside DDP ``value`` itself."""
    if status.env is not EnvType.DDP:
        return value
    import torch
    import torch.distributed as tdist

    from .distributed import all_reduce

    t = torch.tensor([-1 if value is None else value], dtype=torch.int64, device=status.device)
    all_reduce(t, tdist.ReduceOp.MAX)
    out = int(t.item())
    return None if out < 0 else out
