"""The center's retry rules (issue 14), as functions of task records: no Ray, no clock, no files.

A training run's attempt that FAILED for a *retryable* reason — its node was lost, a rank's worker died
or was killed by a signal, its placement group was lost, or it ran out of its GPU memory — goes back to
PENDING in its original place (its submit time is kept) as a continuation of the same package, while
it has retries left (``attempt <= retries``). Anything else ends it for good: an exception from the
user's code, a bad config, ``del`` (the supervisor reports those with reason ""). The supervisor names
the reason (:mod:`.supervisor`); the center decides with :func:`retry_decision`.

Out of memory: the retry asks max(measured peak × margin, reservation × 1.5) per GPU, capped by the
largest GPU's total (:func:`raised_memory_mb`), as an explicit reservation; when that is no more than
it had, a retry could only fail the same way, and the run ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..checks import checked_retries
from ..tasks import TaskKind, TaskRecord, requeue

__all__ = [
    "DEFAULT_RETRIES",
    "OOM_GROWTH",
    "RETRIES_KEY",
    "RetryDecision",
    "checked_retries",
    "config_retries",
    "final_error",
    "raised_memory_mb",
    "retry_decision",
    "retry_reason_line",
    "retryable",
]

DEFAULT_RETRIES = 2
RETRIES_KEY = "retries"  # a run's config key: its retries unless --retries says otherwise
OOM_GROWTH = 1.5  # an out-of-memory retry asks at least its reservation × this
OUT_OF_MEMORY = "out of memory"
_RETRYABLE = ("node lost", "worker died", "placement group lost", OUT_OF_MEMORY)
_SIGNAL = "killed by signal "


def retryable(reason: str) -> bool:
    """Whether an attempt that ended for ``reason`` (as the supervisor names it) may be retried."""
    return reason in _RETRYABLE or (reason.startswith(_SIGNAL) and reason[len(_SIGNAL) :].isdigit())


def config_retries(args: dict[str, Any]) -> int | None:
    """The run config's ``retries`` key (None when absent), checked as :func:`checked_retries`."""
    if RETRIES_KEY not in args:
        return None
    return checked_retries(args[RETRIES_KEY], f"config key {RETRIES_KEY}")


def raised_memory_mb(record: TaskRecord, margin: float, largest_mb: int) -> int | None:
    """MB per GPU for the retry of an out-of-memory attempt: max(peak × margin, reservation ×
    :data:`OOM_GROWTH`), at most ``largest_mb`` (the largest GPU's total); None when that is no more
    than the attempt had (or nothing is known of its reservation)."""
    current = record.mb_per_gpu
    if current <= 0:
        return None
    wanted = max(math.ceil((record.peak_mb or 0) * margin), math.ceil(current * OOM_GROWTH))
    if largest_mb > 0:
        wanted = min(wanted, largest_mb)
    return wanted if wanted > current else None


def retry_reason_line(attempt: int, attempts: int, reason: str) -> str:
    """A retried task's wait reason: ``retry: attempt 2/3 after node lost``."""
    return f"retry: attempt {attempt}/{attempts} after {reason}"


@dataclass(frozen=True)
class RetryDecision:
    """What becomes of a FAILED attempt: ``record`` back in the queue (``retried``), or its end for good
    with ``error`` (the attempts listed)."""

    record: TaskRecord | None
    error: str
    log_line: str


def final_error(record: TaskRecord, error: str, note: str = "") -> str:
    """The error a task that ends for good is left with: its last attempt's error, and, once it was
    retried (or ``note`` says why it was not), which attempt it was and why each earlier one ended:
    ``<error> (attempt 3/3; earlier: 1 node lost, 2 worker died)``."""
    parts: list[str] = []
    if record.attempt > 1 or note:
        parts.append(f"attempt {record.attempt}/{record.attempts}")
    if note:
        parts.append(note)
    if record.attempt_reasons:
        earlier = ", ".join(f"{i} {why}" for i, why in enumerate(record.attempt_reasons, start=1))
        parts.append(f"earlier: {earlier}")
    return f"{error} ({'; '.join(parts)})" if parts else error


def retry_decision(
    record: TaskRecord,
    *,
    error: str,
    reason: str,
    resume_from: tuple[bool, int] | None,
    margin: float,
    largest_mb: int,
) -> RetryDecision:
    """The fate of ``record``'s attempt that FAILED with ``error`` for ``reason`` (the supervisor's; ""
    for a user error). ``resume_from``: (resume, ckpt id) the retry starts from — (True, -1) when the
    package has a valid checkpoint, (False, -1) to start over in the same package — or None to keep
    the record's own (its attempt never started). ``margin``/``largest_mb``: for an out-of-memory retry
    (:func:`raised_memory_mb`)."""
    tid = record.task_id
    if record.kind is not TaskKind.TRAIN or not retryable(reason):
        return RetryDecision(None, final_error(record, error), "")
    if record.attempt > record.retries:  # (a run given no retries keeps its error as it is)
        ended = f"{tid} attempt {record.attempt} ended: {reason}; no retries left"
        note = f"{reason}, no retries left" if record.retries else ""
        return RetryDecision(None, final_error(record, error, note=note), ended)
    memory: dict[str, Any] = {}
    if reason == OUT_OF_MEMORY and record.gpus:
        per_gpu = raised_memory_mb(record, margin, largest_mb)
        if per_gpu is None:
            note = f"{reason} with {record.mb_per_gpu} MB per GPU, the most a GPU here has: not retried"
            return RetryDecision(None, final_error(record, error, note=note), f"{tid} {note}")
        memory = {
            "memory_mb": per_gpu * max(1, len(record.gpus)),
            "memory_auto": False,
            "memory_source": f"raised after out of memory (attempt {record.attempt})",
        }
    attempt = record.attempt + 1
    resume, ckpt_id = resume_from if resume_from is not None else (record.resume, record.ckpt_id)
    moved = requeue(record, reason=retry_reason_line(attempt, record.attempts, reason))
    retried = replace(
        moved,
        attempt=attempt,
        attempt_reasons=(*record.attempt_reasons, reason),
        resume=resume,
        ckpt_id=ckpt_id,
        error="",
        output_tail=(),
        **memory,
    )
    line = f"{tid} attempt {record.attempt} ended: {reason}; retrying (attempt {attempt}/{record.attempts})"
    if memory:
        line += f" with {memory['memory_mb']} MB"
    return RetryDecision(retried, "", line)
