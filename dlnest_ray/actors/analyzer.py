"""The analyzer: one save package loaded once (model, dataset, log), running experiment scripts on demand.

A plain class, run in-process by tests; the run supervisor makes it a detached Ray actor named after
its task (``A_0003``) inside the task's placement group, on the GPU the policy chose.

Threads: calls arrive concurrently (a threaded actor). One worker thread loads the package, then runs
jobs from a FIFO queue one at a time, in submit order; state that scripts store on ``self`` persists
between them. Everything the process writes to fd 1/2 goes into a bounded :class:`LineBuffer` (and to
``<package>/_analyze_output.txt``, each line marked by :func:`output_prefix`, so it stays readable after
the analyzer has ended). A job's output is exactly the lines ``[start, end)``: the capture is synced before
and after each job.

A job with a timeout, or one its caller cancels, is interrupted by raising :class:`ExpInterrupted` in
the worker thread at its next Python line (a long native call, ``time.sleep`` included, finishes first);
the analyzer stays loaded.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import AnalysisError, UserCodeError
from ..linebuffer import LineBuffer
from ..savepack.layout import ANALYZE_OUTPUT_FILE, output_prefix
from ..scheduling.specs import Placement
from ..tasks import TaskRecord
from .jobs import ExpInterrupted, Job, JobState, ScriptFailed, format_failure, short_repr
from .names import get_center

log = logging.getLogger(__name__)

PHASE_TIMEOUT_S = 5.0  # a busy/ready report to the center; a restarting center is not waited for longer

__all__ = ["OUTPUT_FILE", "AnalyzerActor", "ExpInterrupted", "JobState", "ScriptFailed", "output_prefix"]

OUTPUT_FILE = ANALYZE_OUTPUT_FILE  # <package>/_analyze_output.txt (savepack.layout owns the name)
LINES_ENV = "DLNEST_RAY_ANALYZER_LINES"


class AnalyzerActor:
    """Loads ``record.package`` (checkpoint ``record.ckpt_id``; -2: none) and serves scripts from
    ``record.scripts``. ``env`` (``CUDA_VISIBLE_DEVICES``, ...) is applied before torch starts CUDA."""

    def __init__(
        self,
        record: dict[str, Any],
        env: dict[str, str] | None = None,
        *,
        threads: int = 0,
        capture: bool = True,
    ) -> None:
        torch = sys.modules.get("torch")
        if env and torch is not None and torch.cuda.is_initialized():
            raise RuntimeError(
                "this Ray worker already initialised CUDA for other work; resubmit the analyzer"
            )
        os.environ.update(env or {})
        self.record = TaskRecord.from_json(record)
        self.task_id = self.record.task_id
        self.package = Path(self.record.package)
        self.scripts_dir = Path(self.record.scripts).resolve() if self.record.scripts else None
        self.threads = threads
        self.output = LineBuffer(
            self.package / OUTPUT_FILE,
            int(os.environ.get(LINES_ENV, "10000")),
            stamp=False,
            file_prefix=output_prefix(self.task_id, self.record.submitted_at),
        )
        from ..runtime.output import LineCapture

        self._capture = LineCapture(self.output.append).start() if capture else None
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._current: Job | None = None
        self._worker_tid = 0
        self._loaded = threading.Event()
        self._closed = threading.Event()
        self.load_error = ""
        self.checkpoint_id: int | None = None
        self.device = ""
        self._analyzer: Any = None
        self._note(f"{self.task_id}: loading {self.package} (checkpoint {self.record.ckpt_id})")
        threading.Thread(target=self._work, name=f"analyzer-{self.task_id}", daemon=True).start()

    # ------------------------------------------------------------------------------------------ calls
    def ready(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the load to finish (up to ``timeout_s``): ``{"loaded", "error"}``."""
        self._loaded.wait(timeout_s)
        return {"loaded": self._loaded.is_set(), "error": self.load_error}

    def submit(self, script: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Queue ``experience(self)`` of ``script`` (a name or path inside the scripts folder); returns the
        job. Refused now, with one line, if the name escapes the folder or names no file."""
        if self._closed.is_set():
            raise AnalysisError(f"{self.task_id} has been closed")
        if timeout_s is not None and timeout_s <= 0:
            raise AnalysisError("--timeout must be a positive number of seconds")
        path = self.resolve(script)
        with self._lock:
            job = Job(
                job=len(self._jobs) + 1,
                script=str(script),
                path=path,
                timeout_s=timeout_s,
                submitted_at=time.time(),
            )
            self._jobs[job.job] = job
            self._queue.put(job)
            return job.to_json()

    def resolve(self, script: str) -> Path:
        """The file ``script`` names in the scripts folder (refusals are AnalysisErrors)."""
        from ..runtime.analysis import resolve_script

        if self.scripts_dir is None:
            raise AnalysisError(f"{self.task_id} has no scripts folder: start it with --scripts DIR")
        path = resolve_script(script, self.scripts_dir)
        if not path.is_file():
            have = ", ".join(self.scripts()) or "none"
            raise AnalysisError(f"no script {script!r} in {self.scripts_dir} (scripts there: {have})")
        return path

    def scripts(self) -> list[str]:
        """The script names in the scripts folder (for completion)."""
        if self.scripts_dir is None or not self.scripts_dir.is_dir():
            return []
        return sorted(p.stem for p in self.scripts_dir.glob("*.py") if not p.name.startswith("_"))

    def job(self, job: int) -> dict[str, Any]:
        return self._job(job).to_json()

    def poll(self, job: int, offset: int = 0, wait_s: float = 1.0) -> dict[str, Any]:
        """The job's output from ``offset`` (lines outside the job's range never appear), waiting up to
        ``wait_s`` for a new line or for the job to end: ``{"offset", "end", "missed", "lines", "job"}``."""
        j = self._job(job)
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            # The job as it was before the read is what the caller gets: were it taken after, a job
            # that ended meanwhile would say so beside lines that stop short of its end.
            snap = j.to_json()
            state, start = JobState(snap["state"]), int(snap["start"])
            if state is JobState.QUEUED or start < 0:  # not started (or dropped before it started)
                lines: dict[str, Any] = {"offset": offset, "end": offset, "missed": 0, "lines": []}
                end = j.end
            else:
                lines = self.output.read(max(offset, start))
                # The end is set before the closing line is written and the state flips after it: read
                # after the lines, it clips any closing line they hold.
                if (end := j.end) >= 0:
                    keep = max(0, end - lines["offset"])
                    lines["lines"] = lines["lines"][:keep]
                    lines["end"] = max(lines["offset"], min(lines["end"], end))
            remaining = deadline - time.monotonic()
            if lines["lines"] or state.is_terminal() or remaining <= 0:
                return {**lines, "job": snap}
            # New lines matter only while the job is between its start and its end; otherwise wait for
            # its state, start or end to move.
            after = int(lines["end"]) if state is not JobState.QUEUED and start >= 0 > end else None
            seen = (state, start >= 0, end >= 0)

            def moved(seen: tuple[JobState, bool, bool] = seen) -> bool:
                return (j.state, j.start >= 0, j.end >= 0) != seen

            self.output.wait(after, remaining, until=moved)

    def cancel_job(self, job: int, reason: str = "interrupted by its caller") -> dict[str, Any]:
        """Stop a job: a queued one never runs, a running one is interrupted."""
        j = self._job(job)
        self._interrupt(j, reason)
        return j.to_json()

    def run_script(self, path: str, timeout_s: float | None = None) -> Any:
        """Run ``experience(self)`` from ``path`` (inside the scripts folder) after the jobs already
        queued; returns its value, or raises :class:`ScriptFailed` with the traceback."""
        j = self._job(self.submit(path, timeout_s)["job"])
        while not j.state.is_terminal():
            self.output.wait(None, 1.0, until=lambda: j.state.is_terminal())
        if j.state is JobState.SUCCEEDED:
            return j.value
        raise ScriptFailed(
            f"{j.script} {j.state.value.lower()}: {j.error}" + (f"\n{j.traceback}" if j.traceback else "")
        )

    def read_output(self, offset: int = 0, wait_s: float = 0.0) -> dict[str, Any]:
        """Every line from ``offset`` (see :meth:`LineBuffer.read`), waiting up to ``wait_s`` for one."""
        if wait_s > 0:
            self.output.wait(offset, wait_s, until=self._closed.is_set)
        alive = not self._closed.is_set()  # before the read: "not alive" then means "nothing after"
        return {**self.output.read(offset), "alive": alive}

    def info(self) -> dict[str, Any]:
        with self._lock:
            queued = sum(1 for j in self._jobs.values() if j.state is JobState.QUEUED)
            running = self._current.script if self._current is not None else None
        return {
            "task_id": self.task_id,
            "package": str(self.package),
            "scripts": str(self.scripts_dir or ""),
            "loaded": self._loaded.is_set(),
            "load_error": self.load_error,
            "checkpoint_id": self.checkpoint_id,
            "device": self.device,
            "queued": queued,
            "running": running,
            "jobs": len(self._jobs),
            "output_end": self.output.end,
        }

    def wait_closed(self) -> bool:
        """Return once the analyzer is closed (its supervisor waits on this to notice a crash)."""
        self._closed.wait()
        return True

    def close(self) -> None:
        """Stop the queued and running jobs and the output capture; the actor is killed after this."""
        if self._closed.is_set():
            return
        with self._lock:
            jobs = [j for j in self._jobs.values() if not j.state.is_terminal()]
        for j in jobs:
            self._interrupt(j, "the analyzer was closed")
        self._queue.put(None)
        deadline = time.monotonic() + 5
        while self._current is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        self._note(f"{self.task_id}: closed")
        self._closed.set()
        self.output.notify()
        if self._capture is not None:
            self._capture.stop()

    # ------------------------------------------------------------------------------------------ worker
    def _job(self, job: int) -> Job:
        with self._lock:
            j = self._jobs.get(int(job))
        if j is None:
            raise AnalysisError(f"{self.task_id} has no job {job}")
        return j

    def _sync(self) -> None:
        if self._capture is not None:
            self._capture.sync()

    def _note(self, message: str) -> None:
        """A line of the analyzer's own, after everything printed before it."""
        self._sync()
        self.output.append([f"## {message}"])

    def _work(self) -> None:
        self._worker_tid = threading.get_ident()
        self._load()
        while (job := self._queue.get()) is not None:
            try:
                self._run(job)
            except ExpInterrupted:  # an interrupt that landed just after the script returned
                with self._lock:
                    self._current = None
                self._finish(job, JobState.INTERRUPTED, job.interrupt)

    def _load(self) -> None:
        try:
            if self.threads > 0:
                import torch

                torch.set_num_threads(self.threads)
            from ..runtime.analysis import NO_CHECKPOINT, Analyzer

            cpu = self.record.placement is Placement.CPU
            self._analyzer = Analyzer(self.package, ckpt_id=self.record.ckpt_id, cpu=cpu)
            self.checkpoint_id = self._analyzer.context.checkpoint_id
            self.device = str(self._analyzer.context.status.device)
            what = (
                "no checkpoint"
                if self.record.ckpt_id == NO_CHECKPOINT
                else f"checkpoint {self.checkpoint_id}"
            )
            self._note(f"{self.task_id}: ready ({what} on {self.device}; scripts in {self.scripts_dir})")
        except BaseException as e:
            traceback.print_exception(type(e), e, e.__traceback__)
            self.load_error = f"{type(e).__name__}: {e}"
            self._note(f"{self.task_id}: loading failed: {self.load_error}")
        finally:
            self._loaded.set()

    def _tell_phase(self, phase: str) -> None:
        """Tell the center whether a script runs (``busy``) or none (``ready``): only an analyzer idle for
        a while may be preempted. Waited for (a few ms), so two reports never overtake each other in the
        threaded center; nothing to tell outside a cluster."""
        try:
            import ray

            if ray.is_initialized():
                ray.get(
                    get_center().task_phase.remote(task_id=self.task_id, phase=phase), timeout=PHASE_TIMEOUT_S
                )
        except Exception as e:  # the center restarts: the next script tells it again
            log.info("%s: could not tell the center it is %s: %s", self.task_id, phase, e)

    def _run(self, job: Job) -> None:
        with self._lock:  # checked and claimed at once: a cancel lands either before or after
            if job.state is not JobState.QUEUED:
                return  # cancelled while it waited
            job.state = JobState.RUNNING
            self._current = job
        self._tell_phase("busy")
        try:
            self._run_claimed(job)
        finally:
            if self._queue.empty():
                self._tell_phase("ready")

    def _run_claimed(self, job: Job) -> None:
        timer: threading.Timer | None = None
        self._note(f"exp {job.job} {job.script}: started")
        with self._lock:
            job.start = self.output.end
            job.started_at = time.time()
        self.output.notify()
        if job.timeout_s is not None:
            timer = threading.Timer(
                job.timeout_s, self._interrupt, (job, f"timed out after {job.timeout_s:g} s")
            )
            timer.daemon = True
            timer.start()
        state, error = JobState.FAILED, ""
        try:
            state, error = self._execute(job)
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._current = None
                if job.interrupt:  # sent but perhaps not yet raised: it must not hit the next job
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._worker_tid), None)
        self._finish(job, state, error)

    def _execute(self, job: Job) -> tuple[JobState, str]:
        from ..runtime.loader import load_script

        if self._analyzer is None:
            return JobState.FAILED, f"the package did not load ({self.load_error})"
        try:
            fn = load_script(job.path)
            job.value = self._analyzer.run(fn)
            job.result = None if job.value is None else short_repr(job.value)
            return JobState.SUCCEEDED, ""
        except ExpInterrupted:
            return JobState.INTERRUPTED, job.interrupt
        except UserCodeError as e:
            if e.__cause__ is not None:  # the script failed to import: show where
                job.traceback = format_failure(e.__cause__, job.path)
                print(job.traceback, end="", file=sys.stderr)
            return JobState.FAILED, str(e)
        except BaseException as e:  # the script's own failure, SystemExit included
            job.traceback = format_failure(e, job.path)
            print(job.traceback, end="", file=sys.stderr)
            return JobState.FAILED, f"{type(e).__name__}: {e}"

    def _finish(self, job: Job, state: JobState, error: str) -> None:
        self._sync()
        with self._lock:
            if job.state.is_terminal():
                return
            job.end = self.output.end if job.start >= 0 else job.start
            job.ended_at = time.time()
            job.error = error
        took = "" if job.started_at is None else f" in {job.ended_at - job.started_at:.2f} s"
        self._note(
            f"exp {job.job} {job.script}: {state.value.lower()}{took}" + (f" ({error})" if error else "")
        )
        with self._lock:  # ended only now: whoever waits for the end also finds the closing line
            job.state = state
        self.output.notify()

    def _interrupt(self, job: Job, reason: str) -> None:
        with self._lock:
            if job.state is JobState.QUEUED:
                job.state, job.error, job.ended_at = JobState.INTERRUPTED, reason, time.time()
                job.interrupt = reason
                self.output.notify()
                return
            if self._current is not job or job.interrupt:
                return
            job.interrupt = reason
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._worker_tid), ctypes.py_object(ExpInterrupted)
            )
