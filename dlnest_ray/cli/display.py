"""Foreground display for ``train``: the run's output on the terminal plus a rich progress bar per epoch.

The run's fd 1/2 go into the output file (see runtime.output); this class owns a duplicate of the
terminal taken *before* that redirection. On a terminal, output lines are printed through rich's live
display, so they scroll above the progress bars instead of tearing them; elsewhere (a pipe, CI) the
bytes are copied through unchanged and no bar is drawn.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import Any

__all__ = ["ForegroundDisplay"]


class ForegroundDisplay:
    """Console sink and ``TrainObserver`` in one; use as a context manager around training."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._fd = os.dup(1)
        self._tty = os.isatty(self._fd)
        self._pending = b""
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None
        if self._tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._stream = os.fdopen(os.dup(self._fd), "w", buffering=1, encoding="utf-8", errors="replace")
            self._console = Console(file=self._stream, highlight=False, soft_wrap=True)
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self._console,
                redirect_stdout=False,
                redirect_stderr=False,
            )

    def __enter__(self) -> ForegroundDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.flush_pending()
        if self._progress is not None:
            self._progress.stop()
            self._stream.close()
        os.close(self._fd)

    # console sink (called on the output reader thread)
    def __call__(self, data: bytes) -> None:
        if not self._tty:
            os.write(self._fd, data)
            return
        with self._lock:
            data = self._pending + data
            head, sep, self._pending = data.rpartition(b"\n")
        if sep:
            self._console.print(
                (head + sep).decode("utf-8", "replace"), end="", markup=False, highlight=False
            )

    def flush_pending(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, b""
        if rest:
            self(rest + b"\n")

    # TrainObserver
    def epoch_started(self, epoch: int, total_steps: int | None) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task("train", total=total_steps, epoch=epoch)

    def step_done(self, epoch: int, iter: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def epoch_finished(self, epoch: int, row: dict[str, Any]) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[-1]
            if task.total is None:
                self._progress.update(self._task, total=task.completed)
