"""An analyzer's jobs: one ``exp`` call each, its state and the offset range of its output."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import AnalysisError

__all__ = ["ExpInterrupted", "Job", "JobState", "ScriptFailed", "format_failure", "short_repr"]

RESULT_CHARS = 2000


class ExpInterrupted(BaseException):
    """Raised inside a running script to stop it (timeout or cancel); a BaseException, so a script's
    ``except Exception`` does not swallow it."""


class ScriptFailed(AnalysisError):
    """``run_script`` of a script that raised, timed out or was refused; the message has the traceback."""


class JobState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"

    def __str__(self) -> str:
        return self.value

    def is_terminal(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass(kw_only=True)
class Job:
    """One ``exp`` call. ``start``/``end``: its output's offsets (-1 until known)."""

    job: int
    script: str
    path: Path
    timeout_s: float | None
    submitted_at: float
    state: JobState = JobState.QUEUED
    start: int = -1
    end: int = -1
    error: str = ""
    traceback: str = ""
    result: str | None = None  # repr of the returned value (shortened)
    value: Any = None
    started_at: float | None = None
    ended_at: float | None = None
    interrupt: str = ""  # why it is being interrupted (set once)

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "script": self.script,
            "path": str(self.path),
            "state": self.state.value,
            "start": self.start,
            "end": self.end,
            "error": self.error,
            "traceback": self.traceback,
            "result": self.result,
            "timeout_s": self.timeout_s,
            "seconds": None
            if self.started_at is None or self.ended_at is None
            else round(self.ended_at - self.started_at, 4),
        }


def short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not fail the job
        text = f"<unprintable {type(value).__name__}: {e}>"
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + "..."


def format_failure(e: BaseException, script: Path) -> str:
    """The traceback from the script's first frame on (the analyzer's own frames are noise)."""
    tb = e.__traceback__
    while tb is not None and Path(tb.tb_frame.f_code.co_filename) != script:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))
