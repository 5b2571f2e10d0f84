"""fd-level output capture: everything the process writes to fd 1 and 2 is appended to a file.

File descriptors 1 and 2 are pointed at a pipe, so C/C++ libraries and subprocesses are captured too,
not only ``print``. One reader thread appends what arrives to the output file and, optionally, hands
it to a console sink (the foreground ``train`` shows it on the terminal). ``sys.stdout``/``sys.stderr``
are re-opened on the redirected descriptors for the duration, so Python output cannot bypass the pipe
(pytest, for example, swaps ``sys.stdout`` for its own object).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TextIO

__all__ = ["ConsoleSink", "OutputTee", "fd_console_sink"]

ConsoleSink = Callable[[bytes], None]


def fd_console_sink(fd: int) -> ConsoleSink:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    return write


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

    def __enter__(self) -> OutputTee:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
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
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        self._saved_sys = (sys.stdout, sys.stderr)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        return self

    @staticmethod
    def _pump(r: int, out: object, sink: ConsoleSink | None) -> None:
        assert hasattr(out, "write") and hasattr(out, "close")
        try:
            while data := os.read(r, 65536):
                out.write(data)
                if sink is not None:
                    try:
                        sink(data)
                    except Exception:  # a broken console must not stall the run: keep the file going
                        sink = None
        finally:
            out.close()
            os.close(r)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._saved_sys is not None
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = self._saved_sys
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        # The pipe ends when every writer is gone; a forked child (a DataLoader worker) may still hold it.
        if self._reader is not None:
            self._reader.join(timeout=5)
        os.close(self.console_fd)
        self.console_fd = -1
