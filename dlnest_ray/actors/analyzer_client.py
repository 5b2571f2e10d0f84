"""The client's analyzer operations: scripts and output go straight to the analyzer actor (named after
its task), not through the center, so a warm ``exp`` costs a few actor calls.

A task that is still pending or loading can be waited for; one that has ended says so, and its output
is read back from ``<package>/_analyze_output.txt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import DlnestError
from ..linebuffer import read_prefixed
from ..savepack.layout import analyze_output_path, output_prefix
from ..tasks import TaskKind, TaskRecord
from .calls import ActorUnavailable, call
from .jobs import JobState
from .names import NAMESPACE

__all__ = ["AnalyzerOps"]


class AnalyzerOps:
    """A part of :class:`~dlnest_ray.actors.client.Client`: ``task`` looks a task up at the center."""

    def __init__(self, task: Callable[[str], TaskRecord]) -> None:
        self.task = task
        self._analyzers: dict[str, Any] = {}
        self.keep_handles = True  # a handle found once is used again (a subclass may ask each time)

    def analyzer(
        self, task_id: str, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> Any:
        """The analyzer actor of ``task_id``. With ``wait``, a pending or loading task is waited for
        (``on_wait(reason)`` is called when the reason changes); an ended one is a DlnestError."""
        if TaskKind.of(task_id) is not TaskKind.ANALYZE:
            raise DlnestError(f"{task_id} is not an analyzer (analyzer task ids start with A_)")
        if task_id in self._analyzers:
            return self._analyzers[task_id]
        said = None
        while True:
            handle = self._find(task_id)
            if handle is not None:
                if self.keep_handles:
                    self._analyzers[task_id] = handle
                return handle
            task = self.task(task_id)
            status = task.status
            if status.is_terminal():
                error = f": {task.error}" if task.error else ""
                raise DlnestError(
                    f"{task_id} has ended ({status}{error}); its output stays in "
                    f"{analyze_output_path(task.package)} (`dlnest-ray watch {task_id}`)"
                )
            reason = task.wait_reason or task.phase or status.value.lower()
            if not wait:
                raise DlnestError(f"{task_id} is not started yet ({status}: {reason}); try again shortly")
            if on_wait is not None and reason != said:
                on_wait(reason)
                said = reason
            time.sleep(0.25)

    def _find(self, task_id: str) -> Any:
        """The analyzer's actor handle when it runs, else None (a subclass may reach it another way)."""
        import ray

        try:
            return ray.get_actor(task_id, namespace=NAMESPACE)
        except ValueError:  # not created yet, or gone: the task record says which
            return None

    def _acall(self, task_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        handle = self.analyzer(task_id)
        gone = f"{task_id} is not running any more (`dlnest-ray tasks --all`)"
        try:
            return call(getattr(handle, method), *args, unavailable=gone, **kwargs)
        except ActorUnavailable:
            self._analyzers.pop(task_id, None)
            raise

    # ---------------------------------------------------------------------------------------------- exp
    def submit_exp(
        self,
        task_id: str,
        script: str,
        timeout_s: float | None = None,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Queue ``script`` on the analyzer; returns the job (``job``, ``state``, ...). With ``wait``, an
        analyzer that is still pending or loading is waited for."""
        self.analyzer(task_id, wait=wait, on_wait=on_wait)
        return dict(self._acall(task_id, "submit", script, timeout_s))

    def poll_exp(self, task_id: str, job: int, offset: int = 0, wait_s: float = 1.0) -> dict[str, Any]:
        """A job's output from ``offset`` and its state (waits up to ``wait_s`` for either to move)."""
        return dict(self._acall(task_id, "poll", job, offset, wait_s))

    def cancel_exp(self, task_id: str, job: int) -> dict[str, Any]:
        """Interrupt a running job (or drop a queued one); the analyzer stays loaded."""
        return dict(self._acall(task_id, "cancel_job", job))

    def run_exp(self, task_id: str, script: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Run ``experience(self)`` of ``script`` on the analyzer and wait for it (DLNest's /run_exp).

        Returns the job: ``state`` (SUCCEEDED, FAILED, INTERRUPTED), ``start``/``end`` (the offset range
        of its output, for :meth:`get_analyze_output`), ``error``, ``traceback``, ``result`` (repr)."""
        job = self.submit_exp(task_id, script, timeout_s)
        offset = 0
        while not JobState(job["state"]).is_terminal():
            out = self.poll_exp(task_id, int(job["job"]), offset, wait_s=5.0)
            offset, job = int(out["end"]), out["job"]
        return {"task_id": task_id, **job}

    def get_analyze_output(self, task_id: str, offset: int = 0, wait_s: float = 0.0) -> dict[str, Any]:
        """An analyzer's output lines from ``offset``: ``{"offset", "end", "missed", "lines", "alive"}``.
        Read from the actor while it lives (waiting up to ``wait_s`` for a line), else from the package's
        ``_analyze_output.txt`` (which keeps every line)."""
        try:
            return dict(self._acall(task_id, "read_output", offset, wait_s))
        except DlnestError:
            task = self.task(task_id)  # raises for an unknown id
            if not task.status.is_terminal():  # not started yet, or ending: nothing to read now
                time.sleep(min(wait_s, 0.5))
                return {"offset": offset, "end": offset, "missed": 0, "lines": [], "alive": True}
        prefix = output_prefix(task_id, task.submitted_at)
        out = read_prefixed(analyze_output_path(task.package), prefix, offset)
        return {**out, "alive": False}

    def analyzer_info(self, task_id: str) -> dict[str, Any]:
        """What the analyzer loaded (checkpoint, device, scripts folder) and its queue."""
        return dict(self._acall(task_id, "info"))

    def analyze_scripts(self, task_id: str) -> list[str]:
        """The script names in the analyzer's scripts folder."""
        return list(self._acall(task_id, "scripts"))
