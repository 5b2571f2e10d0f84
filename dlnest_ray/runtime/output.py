"""fd-level output capture: everything the process writes to fd 1 and 2 is appended to a file.

File descriptors 1 and 2 are pointed at a pipe, so C/C++ libraries and subprocesses are captured too,
not only ``print``. One reader thread appends what arrives to the output file and, optionally, hands
it to a console sink (the foreground ``train`` shows it on the terminal). ``sys.stdout``/``sys.stderr``
are re-opened on the redirected descriptors for the duration, so Python output cannot bypass the pipe
(pytest, for example, swaps ``sys.stdout`` for its own object).

The reader threads never log while they run: a log record would go to stderr, which is the pipe they
read (each record would come back as output, and a full pipe would block the reader for good). They
count their failures instead, and the capture logs them once fd 1/2 are restored.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

__all__ = ["ConsoleSink", "LineCapture", "OutputTee", "fd_console_sink"]

log = logging.getLogger(__name__)

ConsoleSink = Callable[[bytes], None]


class _Failures:
    """Failures of a reader thread, by what failed: how many, and the first one's description."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def add(self, what: str, e: BaseException) -> bool:
        """Count a failure; True when it is the first of its kind."""
        self.first.setdefault(what, f"{type(e).__name__}: {e}")
        self.counts[what] = self.counts.get(what, 0) + 1
        return self.counts[what] == 1

    def log(self, where: str) -> None:
        """Log what failed (call with fd 1/2 restored)."""
        for what, n in self.counts.items():
            log.warning("%s: %s failed %d time(s), first with %s", where, what, n, self.first[what])


def fd_console_sink(fd: int) -> ConsoleSink:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    return write


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception as e:  # a closed or broken stream has nothing left to lose: redirect anyway
            log.debug("flushing %r before redirecting failed: %s: %s", stream, type(e).__name__, e)


def _redirect_into(w: int) -> tuple[TextIO, TextIO]:
    """Point fd 1 and 2 at ``w`` (then closed) and ``sys.stdout``/``sys.stderr`` at them; returns the
    previous ``sys`` streams."""
    os.dup2(w, 1)
    os.dup2(w, 2)
    os.close(w)
    saved = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _text_stream(1), _text_stream(2)
    return saved


def _restore(saved_fds: tuple[int, int], saved_sys: tuple[TextIO, TextIO]) -> None:
    """Undo :func:`_redirect_into` (flushing first); ``saved_fds`` stay open."""
    _flush_std()
    sys.stdout, sys.stderr = saved_sys
    os.dup2(saved_fds[0], 1)
    os.dup2(saved_fds[1], 2)


def _text_stream(fd: int) -> TextIO:
    """A line-buffered text stream on ``fd`` that leaves the descriptor open when closed."""
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


class OutputTee:
    """Context manager: redirect fd 1/2 into ``path`` (append), optionally also to ``console``.

    Inside the block, :attr:`console_fd` is a duplicate of the original stdout, for writers (a progress
    bar) that must reach the terminal without landing in the file.
    """

    def __init__(self, path: Path, *, console: bool | ConsoleSink = False) -> None:
        self.path = Path(path)
        self._console = console
        self.console_fd = -1
        self._saved: tuple[int, int] = (-1, -1)
        self._saved_sys: tuple[TextIO, TextIO] | None = None
        self._reader: threading.Thread | None = None
        self._read_fd = -1
        self._failures = _Failures()

    def __enter__(self) -> OutputTee:
        _flush_std()
        self._saved = (os.dup(1), os.dup(2))
        self.console_fd = os.dup(self._saved[0])
        sink: ConsoleSink | None
        if callable(self._console):
            sink = self._console
        else:
            sink = fd_console_sink(self.console_fd) if self._console else None
        out = open(self.path, "ab", buffering=0)
        r, w = os.pipe()
        self._read_fd = r
        self._reader = threading.Thread(
            target=self._pump, args=(r, out, sink), name="dlnest-output", daemon=True
        )
        self._reader.start()
        self._saved_sys = _redirect_into(w)
        return self

    def _pump(self, r: int, out: BinaryIO, sink: ConsoleSink | None) -> None:
        try:
            while data := os.read(r, 65536):
                out.write(data)
                if sink is not None:
                    try:
                        sink(data)
                    except Exception as e:  # a broken console must not stall the run: keep the file going
                        self._failures.add("the console", e)
                        sink = None
        finally:
            out.close()
            os.close(r)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._saved_sys is not None
        _restore(self._saved, self._saved_sys)
        for fd in self._saved:
            os.close(fd)
        # The pipe ends when every writer is gone; a forked child (a DataLoader worker) may still hold it.
        if self._reader is not None:
            self._reader.join(timeout=5)
        os.close(self.console_fd)
        self.console_fd = -1
        self._failures.log(f"output capture into {self.path}")


_SYNC_MARK = b"\x1b[dlnest-sync "


class LineCapture:
    """Redirect fd 1/2 into a pipe for a long-lived process (an analyzer): a reader thread splits what
    arrives into lines and hands them to ``on_lines``, and tees them to the original stdout (for Ray's
    worker log). A carriage return keeps only what follows it, as a terminal would (progress bars);
    a line longer than ``max_line_bytes`` is cut into several.

    :meth:`sync` is a barrier: when it returns, every byte written to fd 1/2 before the call (by any
    thread, C code or subprocess) has been handed over, so output can be attributed to a job exactly.
    """

    def __init__(
        self, on_lines: Callable[[list[str]], None], *, tee: bool = True, max_line_bytes: int = 65_536
    ) -> None:
        self._on_lines = on_lines
        self._tee = tee
        self._max = max_line_bytes
        self._cond = threading.Condition()
        self._sent = 0
        self._seen = 0
        self._saved: tuple[int, int] = (-1, -1)
        self._saved_sys: tuple[TextIO, TextIO] | None = None
        self._reader: threading.Thread | None = None
        self._failures = _Failures()

    def start(self) -> LineCapture:
        _flush_std()
        self._saved = (os.dup(1), os.dup(2))
        r, w = os.pipe()
        self._reader = threading.Thread(target=self._pump, args=(r,), name="dlnest-capture", daemon=True)
        self._reader.start()
        self._saved_sys = _redirect_into(w)
        return self

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything written so far has reached ``on_lines``; False on timeout."""
        _flush_std()
        with self._cond:
            self._sent += 1
            n = self._sent
        os.write(1, _SYNC_MARK + str(n).encode() + b"]\n")
        with self._cond:
            return self._cond.wait_for(lambda: self._seen >= n, timeout=timeout)

    def _line(self, raw: bytes) -> str:
        parts = [p for p in raw.split(b"\r") if p]
        return (parts[-1] if parts else b"").decode("utf-8", errors="replace")

    def _deliver(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._on_lines(lines)
        except Exception as e:  # a failing consumer must not stop the capture
            if self._failures.add("the consumer of the lines", e):  # said at once, where the tee goes
                self._write_original(
                    f"[dlnest-ray] output capture: the consumer failed: {type(e).__name__}: {e}"
                )
        if self._tee:
            self._write_original("\n".join(lines))

    def _write_original(self, text: str) -> None:
        """Write ``text`` and a newline to the original stdout (for Ray, the worker's log)."""
        try:
            os.write(self._saved[0], (text + "\n").encode("utf-8", errors="replace"))
        except OSError as e:  # the original stdout is gone: the lines still reach the consumer
            self._failures.add("the tee to the original stdout", e)

    def _pump(self, r: int) -> None:
        pending = b""
        try:
            while data := os.read(r, 65_536):
                pending += data
                *complete, pending = pending.split(b"\n")
                lines: list[str] = []
                for raw in complete:
                    at = raw.find(_SYNC_MARK)
                    if at < 0:
                        lines.append(self._line(raw))
                        continue
                    if raw[:at]:  # a partial line the job left without a newline
                        lines.append(self._line(raw[:at]))
                    self._deliver(lines)
                    lines = []
                    number = raw[at + len(_SYNC_MARK) :].rstrip(b"]")
                    if number.isdigit():  # else not our mark: a program printed something like it
                        with self._cond:
                            self._seen = max(self._seen, int(number))
                            self._cond.notify_all()
                if b"\r" in pending:
                    pending = pending[pending.rfind(b"\r") + 1 :]
                while len(pending) > self._max:
                    lines.append(self._line(pending[: self._max]))
                    pending = pending[self._max :]
                self._deliver(lines)
            if pending:
                self._deliver([self._line(pending)])
        finally:
            os.close(r)

    def stop(self) -> None:
        """Restore fd 1/2 and ``sys.stdout``/``sys.stderr``; the reader drains and ends."""
        if self._saved_sys is None:
            return
        _restore(self._saved, self._saved_sys)
        self._saved_sys = None
        if self._reader is not None:
            self._reader.join(timeout=5)
        for fd in self._saved:
            os.close(fd)
        self._failures.log("line capture")
