"""Pure formatting of the shell's panes: data in (plain dicts and lines), prompt_toolkit fragments out.

Nothing here touches a terminal or the cluster, so every pane can be tested by comparing text. A
fragment list is prompt_toolkit's ``[(style, text), ...]``; each pane is whole lines joined by ``"\\n"``
and, for the log-like panes, ends with a ``[SetCursorPosition]`` marker so that the Window scrolls to
the newest line by itself (wrapped lines included) instead of us computing what fits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...tasks import TaskStatus
from ..tables import device_tasks_text, memory_text, row_status, task_devices, task_memory_by_id, task_ran

__all__ = [
    "WIDE_MIN_COLUMNS",
    "Fragments",
    "LineLog",
    "ansi_fragments",
    "choose_layout",
    "devices_fragments",
    "log_fragments",
    "status_text",
    "tasks_fragments",
    "top_fragments",
    "visible_tasks",
]

Fragments = list[tuple[str, str]]
WIDE_MIN_COLUMNS = 120  # below this, panes side by side would be too narrow for a task row
CURSOR = ("[SetCursorPosition]", "")
STATUS_STYLE = {
    TaskStatus.PENDING: "fg:ansiyellow",
    TaskStatus.RUNNING: "fg:ansicyan",
    TaskStatus.SUCCEEDED: "fg:ansigreen",
    TaskStatus.FAILED: "fg:ansired",
    TaskStatus.CANCELLED: "fg:ansimagenta",
    TaskStatus.PREEMPTED: "fg:ansibrightyellow",
    TaskStatus.STOPPED: "fg:ansiblue",
}


def choose_layout(columns: int) -> Literal["wide", "narrow"]:
    """``wide`` (outputs side by side, tasks beside devices) from :data:`WIDE_MIN_COLUMNS` columns on,
    else ``narrow`` (every pane stacked)."""
    return "wide" if columns >= WIDE_MIN_COLUMNS else "narrow"


@dataclass(kw_only=True)
class LineLog:
    """A bounded list of display lines, each a fragment list; lines beyond ``limit`` are dropped from the
    front (the pane shows the tail; the full text stays on the cluster and in the package files)."""

    limit: int = 3000
    lines: deque[Fragments] = field(default_factory=deque)

    def add(self, text: str, style: str = "") -> None:
        """Append ``text``; embedded newlines make several lines (never one line drawn as many)."""
        for part in text.split("\n"):
            self.add_fragments([(style, part)])

    def add_fragments(self, fragments: Fragments) -> None:
        """Append one line; ``fragments`` must not contain a newline (see :func:`ansi_fragments`)."""
        self.lines.append(fragments)
        while len(self.lines) > self.limit:
            self.lines.popleft()

    def clear(self) -> None:
        self.lines.clear()


def ansi_fragments(text: str) -> list[Fragments]:
    """Lines of fragments from text with ANSI colour codes (what typer/rich write to a terminal).

    prompt_toolkit's ANSI parser yields one fragment per character; runs of one style are merged."""
    from prompt_toolkit.formatted_text import ANSI, to_formatted_text

    lines: list[Fragments] = [[]]
    for style, chars, *_ in to_formatted_text(ANSI(text.replace("\r\n", "\n"))):
        for i, part in enumerate(chars.split("\n")):
            if i:
                lines.append([])
            if not part:
                continue
            line = lines[-1]
            if line and line[-1][0] == style:
                line[-1] = (style, line[-1][1] + part)
            else:
                line.append((style, part))
    if not lines[-1]:  # text ending with a newline: no empty last line
        lines.pop()
    return lines


def log_fragments(
    lines: Iterable[Fragments], *, empty: str = "", tail: int = 400, back: int = 0
) -> Fragments:
    """The last ``tail`` lines (more could never be visible), newline-joined, with the cursor marker
    after the last one so the pane shows its end; ``empty`` (dim) when there is nothing. ``back`` > 0
    (scrolled back) leaves the last ``back`` lines out, so the pane's bottom line is the one ``back``
    lines before the end, on the very frame the key was pressed (a cursor moved up inside a pane that
    already shows it would not scroll it); clamped so that the first line stays."""
    everything = list(lines)
    back = min(max(0, back), max(0, len(everything) - 1))
    chosen = everything[: len(everything) - back][-tail:]
    if not chosen:
        return [("class:dim", empty), CURSOR] if empty else [CURSOR]
    out: Fragments = []
    for i, line in enumerate(chosen):
        if i:
            out.append(("", "\n"))
        out.extend(line)
    out.append(CURSOR)
    return out


def top_fragments(lines: Sequence[str], *, first: int = 0) -> Fragments:
    """Text shown from its top (the help): lines from ``first`` on, the cursor on the first of them, so
    the pane shows them from its first row."""
    shown = list(lines[max(0, min(first, len(lines) - 1)) :])
    out: Fragments = [CURSOR]
    for i, line in enumerate(shown):
        if i:
            out.append(("", "\n"))
        out.append(("", line))
    return out


# ---------------------------------------------------------------------------------------------- tasks
def status_text(task: Mapping[str, Any]) -> str:
    """``RUNNING``, ``RUNNING (loading)``, ``RUNNING (stopping)``, ``PENDING`` ...: the status with the
    supervisor's phase while it is not plainly running."""
    from ..tables import attempt_text

    status = str(task.get("status", "?"))
    retry = attempt_text(task)  # a retried task: ``attempt 2/3 (node lost)``
    status = f"{status} · {retry}" if retry else status
    by = task.get("preempted_by") or ""
    if by and row_status(task) in (TaskStatus.PENDING, TaskStatus.PREEMPTED):
        status = f"{status} (preempted by {by})"
    if task.get("cancelling"):
        return f"{status} (stopping)"
    if task.get("stop_reason") and row_status(task) is TaskStatus.RUNNING:
        return f"{status} (stopping early)"
    phase = str(task.get("phase") or "")
    if row_status(task) is TaskStatus.RUNNING and phase and phase != "running":
        return f"{status} ({phase})"
    return status


def _note(task: Mapping[str, Any]) -> str:
    if row_status(task) is TaskStatus.PENDING:
        return str(task.get("wait_reason") or "")
    if row_status(task) in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.STOPPED) and task.get(
        "error"
    ):
        return str(task["error"])
    from ..tables import latest_metrics_text, task_latest_metrics  # cached per file: cheap every refresh

    return latest_metrics_text(task_latest_metrics(task))


def _fit(text: str, width: int) -> str:
    """``text`` in exactly ``width`` cells: padded, or cut with an ellipsis (one line, never wraps)."""
    text = text.replace("\r", " ").replace("\n", " ")  # a multi-line error stays on its row
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + "…" if width > 1 else text[:width]
    return text.ljust(width)


def _style(task: Mapping[str, Any]) -> str:
    status = row_status(task)
    return STATUS_STYLE[status] if status is not None else ""


def _ended(task: Mapping[str, Any]) -> bool:
    status = row_status(task)
    return status is not None and status.is_terminal()


def visible_tasks(tasks: Sequence[Mapping[str, Any]], *, finished: int = 5) -> list[Mapping[str, Any]]:
    """Every running or pending task, then the ``finished`` most recently ended ones, in id order:
    what a glance at the queue needs (``tasks --all`` in the shell lists everything)."""
    active = [t for t in tasks if not _ended(t)]
    ended = [t for t in tasks if _ended(t)]
    ended.sort(key=lambda t: float(t.get("ended_at") or t.get("submitted_at") or 0.0))
    keep = {id(t) for t in active + ended[-finished:]} if finished > 0 else {id(t) for t in active}
    return [t for t in tasks if id(t) in keep]


def tasks_fragments(
    tasks: Sequence[Mapping[str, Any]], width: int, *, now: float | None = None, error: str = ""
) -> Fragments:
    """The task table in ``width`` columns: a header, then one line per task of :func:`visible_tasks`:
    id, status (with phase), devices, memory per GPU (:func:`~..tables.memory_text`), ran, package
    folder, description, wait reason or error.

    Fixed columns come first; the package, description and note share what is left, so a row never
    wraps (a wrapped row would misalign every row below it)."""
    now = time.time() if now is None else now
    rows = visible_tasks(tasks)
    fixed = [("id", 7), ("status", 20), ("devices", 14), ("memory", 20), ("ran", 6)]
    rest = max(0, width - sum(w + 1 for _, w in fixed))
    # dated package names are 23 characters; in a narrow pane the wait reason keeps the larger share
    package_w = min(24, rest // 3)
    desc_w = min(20, rest // 4)
    note_w = max(0, rest - package_w - desc_w - 2)
    widths = [w for _, w in fixed] + [package_w, desc_w, note_w]
    names = [n for n, _ in fixed] + ["package", "description", "wait reason / error / latest"]
    out: Fragments = []
    if error:
        out += [("fg:ansired", _fit(error, width).rstrip()), ("", "\n")]
    header = " ".join(_fit(n, w) for n, w in zip(names, widths, strict=True))
    out += _clip([("bold", header)], width)
    if not rows:
        out += [("", "\n"), ("class:dim", _fit("no tasks: `run CONFIG` queues one", width).rstrip())]
    for t in rows:
        ran = task_ran(t, now)
        cells = [
            ("", _fit(str(t.get("task_id")), widths[0])),
            (_style(t), _fit(status_text(t), widths[1])),
            ("", _fit(task_devices(t), widths[2])),
            ("", _fit(memory_text(t), widths[3])),
            ("", _fit(ran, widths[4])),
            ("", _fit(Path(str(t.get("package") or "")).name, widths[5])),
            ("", _fit(str(t.get("description") or ""), widths[6])),
            ("fg:ansired" if row_status(t) is TaskStatus.FAILED else "", _fit(_note(t), widths[7])),
        ]
        out.append(("", "\n"))
        out += _clip([(style, text + " ") for style, text in cells], width)
    return out


def _clip(line: Fragments, width: int) -> Fragments:
    """One table line cut to ``width`` cells, trailing blanks dropped (a narrow pane shows the first
    columns rather than a wrapped row)."""
    out: Fragments = []
    left = width
    for style, text in line:
        if left <= 0:
            break
        out.append((style, text[:left]))
        left -= len(text[:left])
    while out and not out[-1][1].strip():
        out.pop()
    if out:
        out[-1] = (out[-1][0], out[-1][1].rstrip())
    return out


# ---------------------------------------------------------------------------------------------- devices
def devices_fragments(
    devices: Sequence[Mapping[str, Any]], width: int, *, tasks: Sequence[Mapping[str, Any]] = ()
) -> Fragments:
    """One line per GPU: ``node:gpuN  free/total MB  reserved MB  tasks``, each task with its memory
    (``T_0003 6000 → 4210 MB``, :func:`~..tables.memory_text`) when ``tasks`` holds its row; disabled GPUs
    marked ``off`` (first column) in red; each line cut to ``width``."""
    if not devices:
        return [("class:dim", _fit("no GPUs: only --cpu runs can start", width).rstrip())]
    out: Fragments = [("bold", _fit("    device          free/total  resv MB  tasks", width).rstrip())]
    memory = task_memory_by_id(tasks)
    for d in devices:
        label = f"{d.get('node')}:gpu{d.get('gpu')}"
        mem = f"{d.get('free_mb')}/{d.get('total_mb')}"
        line = f"{label:<14}{mem:>14}{d.get('reserved_mb', 0)!s:>9}  {device_tasks_text(d, memory)}"
        off = not d.get("enabled", True)
        out += [
            ("", "\n"),
            ("fg:ansired" if off else "", _fit(("off " if off else "    ") + line, width).rstrip()),
        ]
    return out
