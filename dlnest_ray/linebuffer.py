"""A bounded, thread-safe line buffer with global offsets (the center's log, an analyzer's output).

Every line ever appended has an offset: 0, 1, 2, ... When the buffer is full the oldest lines are
dropped and :attr:`LineBuffer.start` moves on; a reader asking from a dropped offset gets the lines
that are left and is told how many it missed. Offsets never go back, so a reader that keeps asking
from the ``end`` it was last given never sees a line twice and never skips one it could have had.

Optionally every line is also appended to a file (with a prefix, so several writers can share one
file and a reader can pick its own lines back out: :func:`read_prefixed`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LineBuffer", "read_prefixed"]


class LineBuffer:
    """Lines with monotonically increasing offsets; ``max_lines`` bounds memory, not the file."""

    def __init__(
        self,
        path: Path | None = None,
        max_lines: int = 10_000,
        *,
        stamp: bool = True,
        file_prefix: str = "",
    ) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self._lines: deque[str] = deque(maxlen=max_lines)
        self.start = 0  # offset of the oldest line kept
        self.path = path
        self.stamp = stamp
        self.file_prefix = file_prefix
        self.file_error = ""  # why the file stopped being written, if it did
        self._cond = threading.Condition()

    @property
    def end(self) -> int:
        """The offset the next line will get."""
        return self.start + len(self._lines)

    def write(self, message: str) -> None:
        """Append ``message``, one line per line of it (an empty message is one empty line)."""
        self.append(message.splitlines() or [""])

    def append(self, lines: list[str]) -> None:
        """Append whole lines (no newlines inside); with ``stamp``, each gets ``[time] ``."""
        if not lines:
            return
        if self.stamp:
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            lines = [f"[{now}] {line}" for line in lines]
        with self._cond:
            self._keep(lines)
            if self.path is not None:  # one write per batch: O_APPEND keeps batches of writers whole
                try:
                    with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:
                        f.write("".join(f"{self.file_prefix}{line}\n" for line in lines))
                except OSError as e:  # the lines stay readable here; the file is given up, not retried
                    self.file_error = f"{self.path}: {e.strerror or e}"
                    self.path = None
            self._cond.notify_all()

    def preload(self, lines: list[str]) -> None:
        """Put lines (already stamped) in the buffer as the oldest ones, without writing them to the file:
        what a restarted owner of the file had shown before."""
        with self._cond:
            self._keep(lines)

    def _keep(self, lines: list[str]) -> None:
        """Add ``lines`` after the newest, dropping the oldest past ``max_lines`` (``start`` moves on by
        as many). The caller holds the lock."""
        for line in lines:
            if len(self._lines) == self._lines.maxlen:
                self.start += 1
            self._lines.append(line)

    def read(self, offset: int = 0) -> dict[str, Any]:
        """Lines from ``offset`` on, as ``{"offset", "end", "missed", "lines"}``: ``offset`` is the first
        line returned, ``end`` the offset to ask from next, ``missed`` how many were dropped unread."""
        with self._cond:
            missed = max(0, self.start - offset)
            first = max(offset, self.start)
            lines = list(self._lines)[first - self.start :] if first < self.end else []
            return {"offset": first, "end": self.end, "missed": missed, "lines": lines}

    def wait(self, offset: int | None, timeout: float, until: Callable[[], bool] | None = None) -> bool:
        """Block until a line at or after ``offset`` exists (``None``: ignore lines) or ``until()`` is
        true (True), or ``timeout`` passes (False). Re-checked on every append and :meth:`notify`."""

        def done() -> bool:
            return (offset is not None and self.end > offset) or (until is not None and until())

        with self._cond:
            return self._cond.wait_for(done, timeout=max(0.0, timeout))

    def notify(self) -> None:
        """Wake every :meth:`wait` (e.g. a job ended without printing): they re-check their condition."""
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop every line; offsets keep growing (a reader's ``end`` stays valid)."""
        with self._cond:
            self.start = self.end
            self._lines.clear()


def read_prefixed(path: Path, prefix: str, offset: int = 0) -> dict[str, Any]:
    """The lines of ``path`` that start with ``prefix`` (prefix removed), read like
    :meth:`LineBuffer.read`: the file keeps every line, so nothing is ever missed."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            mine = [line[len(prefix) :].rstrip("\n") for line in f if line.startswith(prefix)]
    except FileNotFoundError:
        mine = []
    first = max(0, offset)
    return {"offset": first, "end": len(mine), "missed": 0, "lines": mine[first:]}
