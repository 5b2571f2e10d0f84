"""The shell's data (what the panes show) and the ONE polling loop that refreshes it.

Every pane is fed incrementally: the center's log and an analyzer's output by line offset (only new
lines cross the wire; ``missed`` lines are announced), a run's output file by byte offset. The task
and device lists are small and re-read whole. :func:`poll_once` is one pass with any client object
(tests use a fake); :class:`Poller` runs it in one background thread and asks for a redraw after each.

Threads: the poller and command workers write through :class:`ShellState`'s methods (under its lock);
the UI thread reads :meth:`ShellState.snapshot`. A watch switch bumps ``generation`` so that a poll
that started before the switch cannot append the old task's lines to the new pane.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DlnestError
from ...savepack.outputs import TaskSection, section_start, task_output_name
from ...tasks import TaskKind, TaskStatus
from .panes import Fragments, LineLog, ansi_fragments

__all__ = ["POLL_S", "Poller", "ShellState", "Snapshot", "poll_once"]

POLL_S = 0.5
FIRST_READ_MAX = 256 * 1024  # a run's output file: on watch, show at most its last 256 KB


@dataclass(kw_only=True)
class Snapshot:
    """A consistent copy of what the panes draw (taken by the UI thread each redraw)."""

    center: list[Fragments]
    output: list[Fragments]
    messages: list[Fragments]
    tasks: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    watched: str | None
    watched_alive: bool
    error: str
    busy: int


@dataclass(kw_only=True)
class ShellState:
    """The panes' data. ``watched`` is the task whose output the right pane follows (an analyzer,
    ``A_...``, by line offset; a run, ``T_...``, by byte offset into its output file)."""

    center: LineLog = field(default_factory=LineLog)
    output: LineLog = field(default_factory=LineLog)
    messages: LineLog = field(default_factory=lambda: LineLog(limit=1000))
    center_offset: int = 0
    tasks: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    watched: str | None = None
    watched_offset: int = 0
    watched_alive: bool = True
    section: TaskSection = field(default_factory=lambda: TaskSection(""))  # a run's part of its file
    generation: int = 0
    error: str = ""  # the last polling error (shown above the task table); "" when the center answers
    busy: int = 0  # commands running in worker threads
    lock: threading.RLock = field(default_factory=threading.RLock)

    # ------------------------------------------------------------------------------------------ writers
    def say(self, text: str, style: str = "") -> None:
        """A plain message line (or several)."""
        with self.lock:
            self.messages.add(text, style)

    def say_ansi(self, text: str) -> None:
        """A command's captured output, ANSI colours turned into styles."""
        with self.lock:
            for line in ansi_fragments(text):
                self.messages.add_fragments(line)

    def watch(self, task_id: str | None) -> None:
        """Follow ``task_id``'s output in the right pane from its start (None: withdraw)."""
        with self.lock:
            self.watched, self.watched_offset, self.watched_alive = task_id, 0, True
            self.section = TaskSection(task_id or "")
            self.generation += 1
            self.output.clear()

    def snapshot(self) -> Snapshot:
        with self.lock:
            return Snapshot(
                center=list(self.center.lines),
                output=list(self.output.lines),
                messages=list(self.messages.lines),
                tasks=list(self.tasks),
                devices=list(self.devices),
                watched=self.watched,
                watched_alive=self.watched_alive,
                error=self.error,
                busy=self.busy,
            )

    def task_ids(self) -> list[str]:
        with self.lock:
            return [str(t["task_id"]) for t in self.tasks]

    def find(self, task_id: str) -> Mapping[str, Any] | None:
        with self.lock:
            return next((t for t in self.tasks if t.get("task_id") == task_id), None)


def _add_read(log: LineLog, out: Mapping[str, Any], what: str) -> None:
    if out.get("missed"):
        log.add(f"[missed {out['missed']} lines: {what} dropped them]", "class:dim")
    for line in out.get("lines") or []:
        log.add(str(line))


def _poll_center(client: Any, state: ShellState) -> None:
    with state.lock:
        offset = state.center_offset
    out = client.get_dlnest_output(offset)
    with state.lock:
        if int(out["offset"]) < state.center_offset:  # the buffer was cleared (`log --clear`)
            state.center.clear()
        _add_read(state.center, out, "the center's buffer")
        state.center_offset = int(out["end"])


def _poll_analyzer(client: Any, state: ShellState, task_id: str, offset: int, generation: int) -> None:
    out = client.get_analyze_output(task_id, offset)
    with state.lock:
        if state.generation != generation:
            return
        _add_read(state.output, out, "the analyzer's buffer")
        state.watched_offset = int(out["end"])
        if not out.get("alive", True):
            state.watched_alive = False
            state.output.add(f"-- {task_id} has ended --", "class:dim")


def _poll_run(state: ShellState, task_id: str, offset: int, generation: int) -> None:
    """The watched run's part of its package's output file (a continued package holds several tasks'
    output: see :mod:`dlnest_ray.savepack.outputs`), read from where the last pass stopped."""
    task = state.find(task_id)
    if task is None:
        raise DlnestError(f"no task {task_id!r} (the task pane lists them)")
    path: Path | None = Path(str(task.get("package") or "")) / task_output_name(task)
    if path is None or not path.exists():  # its rank has not written yet
        path = None
    data = b""
    skipped = 0
    with state.lock:
        section = state.section
    if path is not None:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if offset == 0:
                offset = section_start(str(path), task_id) or 0
                if size - offset > FIRST_READ_MAX:  # show the tail of a long section
                    skipped, offset = size - FIRST_READ_MAX - offset, size - FIRST_READ_MAX
                    section.enter()
            f.seek(offset)
            data = f.read()
    ended = TaskStatus(str(task.get("status"))).is_terminal()
    with state.lock:
        if state.generation != generation:
            return
        if skipped:
            state.output.add(f"[skipped {skipped} bytes of {path}]", "class:dim")
        mine = section.feed(data) + (section.finish() if ended else b"")
        for line in mine.decode("utf-8", errors="replace").replace("\r\n", "\n").splitlines():
            state.output.add(line.rsplit("\r", 1)[-1])  # a progress bar: its last redraw only
        state.watched_offset = offset + len(data)
        if ended:
            state.watched_alive = False
            state.output.add(f"-- {task_id} {task.get('status')} --", "class:dim")


def poll_once(client: Any, state: ShellState) -> None:
    """One refresh of every pane; a failing call is shown (``state.error``), never raised: the next
    pass retries (the center may be restarting)."""
    errors = []
    generation = -1
    for step in ("center", "tasks", "devices", "output"):
        try:
            if step == "center":
                _poll_center(client, state)
            elif step == "tasks":
                rows = [t.to_row() for t in client.get_task_info(include_finished=True)]
                with state.lock:
                    state.tasks = rows
            elif step == "devices":
                devices = [d.to_json() for d in client.get_devices_info()]
                with state.lock:
                    state.devices = devices
            else:
                with state.lock:
                    watched, offset = state.watched, state.watched_offset
                    alive, generation = state.watched_alive, state.generation
                if watched is None or not alive:
                    continue
                if TaskKind.of(watched) is TaskKind.ANALYZE:
                    _poll_analyzer(client, state, watched, offset, generation)
                else:
                    _poll_run(state, watched, offset, generation)
        except DlnestError as e:
            if step == "output":  # an unknown or unreadable watched task: say so once and stop
                with state.lock:
                    if state.generation == generation:
                        state.watched_alive = False
                        state.output.add(str(e), "fg:ansired")
            else:
                errors.append(str(e))
        except Exception as e:  # Ray's own errors while the center restarts, a vanished file, ...
            errors.append(f"{step}: {type(e).__name__}: {e}")
    with state.lock:
        state.error = "; ".join(errors)


@dataclass(kw_only=True)
class Poller:
    """The one background thread refreshing all panes every ``interval_s``; ``redraw`` is called after
    each pass (prompt_toolkit's ``Application.invalidate``, which is thread-safe)."""

    client: Any
    state: ShellState
    redraw: Callable[[], None]
    interval_s: float = POLL_S
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dlnest-shell-poller", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            poll_once(self.client, self.state)
            self.redraw()
            if self._stop.wait(self.interval_s):
                return

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
