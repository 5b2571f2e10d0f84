"""The center's memory rules (issue 13), as functions of task records: no Ray, no clock.

* A task submitted without ``--memory`` (or with ``--memory auto``) is *auto*: it starts with an
  estimate (the largest peak its look-alikes measured × the margin; 90% of a GPU when nothing is known)
  and, once its first epoch has ended on every rank, its reservation is *right-sized* to its measured
  peak × the margin, never below the peak and never above what it had. An explicit ``--memory`` is
  kept as given.
* A running task *holds* max(reservation, measured peak) on each of its GPUs, for the whole run
  (:func:`holders_on`): that is what the policy subtracts from a GPU's total.
* A pending auto task follows the peaks its running twins (same fingerprint) report
  (:func:`follow_twin`), so a batch of similar runs packs as soon as the first one has measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..savepack.memory_history import Learned
from ..scheduling.specs import DEFAULT_MEMORY_FRACTION, Holder, Placement
from ..tasks import TaskRecord, TaskStatus
from .center_preempt import holder

__all__ = [
    "DEFAULT_SOURCE",
    "GIVEN_SOURCE",
    "choose_memory",
    "estimate_mb",
    "follow_twin",
    "held_mb",
    "holders_on",
    "right_sized",
    "with_peak",
]

DEFAULT_SOURCE = f"{DEFAULT_MEMORY_FRACTION:.0%} of a GPU (nothing to learn from yet)"
GIVEN_SOURCE = "given (--memory)"


def estimate_mb(peak_mb: int, margin: float, gpus: int = 1) -> int:
    """What a run whose ranks each peak at ``peak_mb`` asks for in all: peak × margin on each GPU."""
    return math.ceil(peak_mb * margin) * max(1, gpus)


def choose_memory(
    spec_kw: dict[str, Any],
    fp: str,
    learned: Learned | None,
    twins: Iterable[TaskRecord],
    margin: float,
    *,
    own: bool = False,
) -> dict[str, Any]:
    """The memory fields of a new training task (``spec_kw``: placement, memory_mb, gpus_requested). An
    explicit ``--memory`` is kept as given. Without one the task is auto and starts from the largest peak
    its look-alikes measured — earlier packages (``learned``; with ``own``, the package it continues) and
    ``twins``, this center's tasks of fingerprint ``fp`` with a peak — × ``margin``; memory_mb None (90%
    of a GPU) when nothing is known."""
    fields: dict[str, Any] = {"fingerprint": fp}
    if spec_kw["placement"] is Placement.CPU:
        return fields
    if spec_kw["memory_mb"] is not None:
        return {**fields, "memory_auto": False, "memory_source": GIVEN_SOURCE}
    peak, source = 0, DEFAULT_SOURCE
    if learned is not None:
        peak = learned.peak_mb
        runs = f"{learned.runs} earlier run{'s' if learned.runs != 1 else ''}"
        source = f"its package's peak ({peak} MB)" if own else f"learned from {runs} (peak {peak} MB)"
    twin = max(twins, key=lambda r: r.peak_mb or 0, default=None)
    if twin is not None and twin.peak_mb is not None and twin.peak_mb > peak:
        how = "earlier run" if twin.status.is_terminal() else "running twin"
        peak, source = twin.peak_mb, f"{how} {twin.task_id} (peak {twin.peak_mb} MB)"
    memory = estimate_mb(peak, margin, spec_kw["gpus_requested"] or 1) if peak else None
    return {**fields, "memory_mb": memory, "memory_auto": True, "memory_source": source}


def held_mb(record: TaskRecord) -> int:
    """MB a running task holds on each of its GPUs: the larger of its reservation and its peak."""
    return max(record.mb_per_gpu, record.peak_mb or 0)


def holders_on(node: str, index: int, running: Iterable[TaskRecord], now: float = 0.0) -> tuple[Holder, ...]:
    """The active tasks on GPU ``index`` of ``node`` and what each holds there (with what preemption
    needs to know of them, :func:`~.center_preempt.holder`; ``now`` tells an idle analyzer)."""
    return tuple(holder(r, held_mb(r), now) for r in running if r.node == node and index in r.gpus)


def with_peak(record: TaskRecord, peak_mb: int | None) -> TaskRecord:
    """``record`` with its measured peak raised to ``peak_mb`` (peaks only grow)."""
    if peak_mb is None or peak_mb <= 0 or (record.peak_mb is not None and record.peak_mb >= peak_mb):
        return record
    return replace(record, peak_mb=int(peak_mb))


def right_sized(record: TaskRecord, margin: float) -> TaskRecord | None:
    """An auto task's reservation lowered to its peak × ``margin`` (never below the peak, never above its
    reservation) after its first epoch; None when nothing changes (explicit memory, no peak yet, or done)."""
    if not record.memory_auto or record.right_sized or record.peak_mb is None or not record.gpus:
        return None
    target = max(record.peak_mb, math.ceil(record.peak_mb * margin))
    return replace(record, right_sized=True, mb_per_gpu=min(record.mb_per_gpu, target))


def follow_twin(pending: TaskRecord, twin: TaskRecord, margin: float) -> TaskRecord | None:
    """A pending auto task of the same fingerprint as running ``twin`` (which measured a peak) with its
    estimate set from the twin's peak; None when it does not apply or changes nothing."""
    if (
        pending.status is not TaskStatus.PENDING
        or not pending.memory_auto
        or not pending.fingerprint
        or pending.fingerprint != twin.fingerprint
        or twin.peak_mb is None
        or pending.placement is Placement.CPU
    ):
        return None
    gpus = pending.gpus_requested or 1
    memory = estimate_mb(twin.peak_mb, margin, gpus)
    if pending.memory_mb == memory:
        return None
    source = f"running twin {twin.task_id} (peak {twin.peak_mb} MB)"
    return replace(pending, memory_mb=memory, memory_source=source)
