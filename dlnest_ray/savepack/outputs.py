"""Which part of a package's output file belongs to which queued task (pure: text in, text out).

A package's ``_output.txt`` (``_output_<rank>.txt`` under DDP) is appended to by every run of it: the
first ``run``, then each ``continue``. A queued task's rank writes a marker line when it starts,
``== T_0004 started 2026-11-28 10:00:00 ==``, so a reader following task T can show exactly T's part:
from T's marker up to the next task's marker. Files written before markers existed have none; they
are shown whole. A retried task (issue 14) writes its marker again for each attempt, followed by
``== attempt 2: node lost ==``; its section runs through all of its attempts.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from . import layout

__all__ = ["TaskSection", "attempt_line", "marker_line", "marker_task", "section_start", "task_output_name"]

log = logging.getLogger(__name__)

_MARKER = re.compile(r"^== ([TA]_\d+) .*==$")


def task_output_name(task: Mapping[str, Any], rank: int | None = None) -> str:
    """The output file a queued task's rank writes: ``_output.txt`` for one process, ``_output_<rank>.txt``
    (rank 0 by default) under DDP. From the task, not from which files exist: a package continued with
    another world size has both kinds."""
    return layout.output_name((rank or 0) if task.get("placement") == "ddp" else None)


def marker_line(task_id: str, now: float | None = None) -> str:
    """The line a task's rank writes first into its output file (no newline)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if now is None else now))
    return f"== {task_id} started {stamp} =="


def attempt_line(attempt: int, reason: str = "") -> str:
    """The line a retried task's rank writes right after its marker: ``== attempt 2: node lost ==``
    (no newline). Not a marker: the task's section goes on through it."""
    return f"== attempt {attempt}: {reason} ==" if reason else f"== attempt {attempt} =="


def marker_task(line: str) -> str | None:
    """The task id a marker line names, else None."""
    found = _MARKER.match(line.rstrip("\r\n"))
    return found.group(1) if found else None


def section_start(path: str, task_id: str) -> int | None:
    """The byte offset of ``task_id``'s last marker in the file at ``path`` (None: it has none yet, or
    the file does not exist). Reads the file once, line by line."""
    found: int | None = None
    offset = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(b"== ") and marker_task(line.decode("utf-8", errors="replace")) == task_id:
                    found = offset
                offset += len(line)
    except OSError as e:  # not written yet, or being replaced: the documented None; readers poll again
        log.debug("cannot read %s for %s's marker: %s", path, task_id, e)
        return None
    return found


class TaskSection:
    """Feed an output file's bytes as they are read; get back only ``task_id``'s part of them.

    Lines before the task's marker are held back (they belong to earlier runs); the marker and what
    follows are passed on; the next marker of another task ends the section (:attr:`done`). A
    partial last line is kept until its newline arrives or :meth:`finish` is called. ``finish`` on a
    file with no marker at all (written before markers existed) returns all of it.
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.inside = False
        self.done = False
        self.any_marker = False
        self._partial = b""
        self._held: list[bytes] = []  # lines seen before any marker: the whole file if none comes

    def enter(self) -> None:
        """Start inside the section (the reader skipped to a point past the task's marker)."""
        self.inside = self.any_marker = True
        self._held = []

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``task_id``'s section among ``data`` (whole lines only)."""
        if self.done:
            return b""
        text = self._partial + data
        *lines, self._partial = text.split(b"\n")
        out: list[bytes] = []
        for raw in lines:
            line = raw + b"\n"
            if self._take(line):
                out.append(line)
            if self.done:
                self._partial = b""
                break
        return b"".join(out)

    def finish(self) -> bytes:
        """What is left once the task has ended: its unterminated last line, or for a file without any
        marker, everything."""
        rest, self._partial = self._partial, b""
        if self.done:
            return b""
        if not self.any_marker:
            held, self._held = self._held, []
            return b"".join(held) + rest
        return rest if self.inside else b""

    def _take(self, line: bytes) -> bool:
        task = marker_task(line.decode("utf-8", errors="replace"))
        if task is not None:
            self.any_marker = True
            self._held = []
            if task == self.task_id:
                self.inside = True
                return True
            if self.inside:
                self.inside, self.done = False, True
            return False
        if not self.any_marker:
            self._held.append(line)
        return self.inside
