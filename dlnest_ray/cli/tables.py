"""Rich tables for the cluster commands (people), and the one JSON printer (scripts).

Only rich is imported here (no Ray): the rows are the plain dicts the center returns.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..tasks import TaskRecord, TaskStatus

__all__ = [
    "console",
    "device_tasks_text",
    "devices_table",
    "duration",
    "latest_metrics_text",
    "memory_line",
    "memory_text",
    "print_json",
    "settings_table",
    "stamp",
    "task_devices",
    "task_latest_metrics",
    "task_memory_by_id",
    "task_ran",
    "tasks_table",
    "with_latest_metrics",
]

STATUS_STYLE = {
    TaskStatus.PENDING: "yellow",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "magenta",
    TaskStatus.PREEMPTED: "bright_yellow",
    TaskStatus.STOPPED: "blue",
}


def _style(task: Mapping[str, Any]) -> str:
    status = row_status(task)
    return STATUS_STYLE[status] if status is not None else "white"


def row_status(task: Mapping[str, Any]) -> TaskStatus | None:
    """The status of a task row (``tasks --json``'s form), None for a row without a known one."""
    try:
        return TaskStatus(str(task.get("status")))
    except ValueError:
        return None


def console() -> Any:
    """A console on stdout; wide when it is not a terminal, so logs keep whole tables."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def print_json(obj: Any) -> None:
    """The machine-readable answer: JSON on stdout and nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def stamp(t: float | None) -> str:
    return "-" if t is None else time.strftime("%m-%d %H:%M:%S", time.localtime(t))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def task_devices(task: Mapping[str, Any]) -> str:
    """``node:gpu0,1`` for a placed GPU task, ``CPU`` for a CPU task, ``-`` before placement."""
    if task.get("placement") == "cpu":
        return "CPU"
    gpus = task.get("gpus") or []
    if not task.get("node") or not gpus:
        return "-"
    return f"{task['node']}:gpu{','.join(map(str, gpus))}"


def _note(task: Mapping[str, Any]) -> str:
    if task.get("cancelling"):
        return "cancelling"
    status = row_status(task)
    if status is TaskStatus.PENDING:
        return str(task.get("wait_reason") or "")
    if task.get("stop_reason") and status in (TaskStatus.RUNNING, TaskStatus.PREEMPTED):
        return f"stopping early at the end of its epoch: {task['stop_reason']}"
    if status is TaskStatus.PREEMPTED:
        if str(task.get("task_id", "")).startswith("A_"):
            return "closing, then back in the queue"
        return "stopping at the end of its epoch, then back in the queue"
    if status in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.STOPPED):
        return str(task.get("error") or "")
    return ""


def task_ran(task: Mapping[str, Any], now: float) -> str:
    """How long the task's ranks (or analyzer) have run: from when they really started (``running_at``),
    ``-`` while Ray has not placed them yet; records from before that field count from the launch."""
    started = task.get("running_at")
    if started is None:
        if row_status(task) is TaskStatus.RUNNING and (task.get("phase") or "") in _NOT_STARTED_PHASES:
            return "-"
        started = task.get("started_at")
    if started is None:
        return "-"
    return duration((task.get("ended_at") or now) - started)


_NOT_STARTED_PHASES = ("starting", "waiting for resources")  # "": a record from before phases


def _phase_note(task: Mapping[str, Any]) -> str:
    """A running task that is not running yet (or any more) says so: its supervisor's phase; a retried
    one, its attempt (:func:`attempt_text`); a preempted one, for what (``(preempted by T_0012)``); one
    of another priority than 0, its priority."""
    phase = task.get("phase") or ""
    retry = attempt_text(task)
    retry = f" · {retry}" if retry else ""
    by = task.get("preempted_by") or ""
    if by and row_status(task) in (TaskStatus.PENDING, TaskStatus.PREEMPTED):
        retry = f" (preempted by {by})" + retry
    priority = task.get("priority")
    if isinstance(priority, int) and priority != 0:
        retry += f" · priority {priority}"
    if task.get("cancelling"):
        return " (stopping)" + retry
    if task.get("stop_reason") and row_status(task) is TaskStatus.RUNNING:
        return " (stopping early)" + retry
    running = row_status(task) is TaskStatus.RUNNING and phase and phase != "running"
    return (f" ({phase})" if running else "") + retry


def attempt_text(task: Mapping[str, Any]) -> str:
    """``attempt 2/3 (node lost)`` for a task row on its second or later attempt, else ""."""
    attempt = task.get("attempt")
    if not isinstance(attempt, int) or attempt <= 1:
        return ""
    reasons = task.get("attempt_reasons") or []
    attempts = task.get("attempts")
    of = f"/{attempts}" if isinstance(attempts, int) else ""
    return f"attempt {attempt}{of}" + (f" ({reasons[-1]})" if reasons else "")


# ------------------------------------------------------------------------------------------ memory
ARROW = "→"
DEFAULT_SHARE_TEXT = "auto 90%"  # an auto task with nothing to learn from asks for 90% of a GPU


def _int(value: Any) -> int | None:
    """A whole number of MB from a row value (None, missing, 0 or not a number: None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if value > 0 else None


def memory_text(task: Mapping[str, Any] | TaskRecord) -> str:
    """A task's GPU memory per GPU in one cell (``tasks``, the shell, ``devices``).

    Given (``--memory MB``): ``6000 MB`` until a peak is measured, then ``6000 → 4210 MB`` (reservation →
    measured peak). Chosen by dlnest-ray (``memory_auto``): ``auto 14400 MB``, and ``auto 14400 → 4800 MB``
    (reservation at launch → the right-sized one) once right-sized. Not placed yet: what it asks for,
    ``6000 MB``, ``auto 14400 MB``, or ``auto 90%`` when there is no number (90% of the GPU it gets).
    A CPU task: ``-``. Rows from before memory was measured (no ``memory_auto``, ``peak_mb`` …) read as
    given. Never raises on a row with missing or odd values."""
    row: Mapping[str, Any] = task.to_row() if isinstance(task, TaskRecord) else task
    if row.get("placement") == "cpu":
        return "-"
    auto = bool(row.get("memory_auto"))
    prefix = "auto " if auto else ""
    now = _int(row.get("mb_per_gpu"))
    if now is None:  # not placed (pending, or ended before it was)
        asked = _int(row.get("memory_mb"))
        return f"{prefix}{asked} MB" if asked is not None else DEFAULT_SHARE_TEXT
    if auto:
        first = _int(row.get("first_mb_per_gpu")) or now
        resized = bool(row.get("right_sized")) and first != now
        return f"auto {first} {ARROW} {now} MB" if resized else f"auto {now} MB"
    peak = _int(row.get("peak_mb"))
    return f"{now} {ARROW} {peak} MB" if peak is not None else f"{now} MB"


def memory_line(task: Mapping[str, Any] | TaskRecord) -> str:
    """What ``run``/``continue`` print after submitting: ``memory: 4800 MB, learned from 3 earlier runs
    (peak 4170 MB)`` — the task's reservation (placed) or request, and where the number came from
    (``memory_source``). ``""`` for a CPU task and for a center that does not say where it came from."""
    row: Mapping[str, Any] = task.to_row() if isinstance(task, TaskRecord) else task
    source = str(row.get("memory_source") or "")
    if row.get("placement") == "cpu" or not source:
        return ""
    mb = _int(row.get("mb_per_gpu")) or _int(row.get("memory_mb"))
    return f"memory: {mb} MB, {source}" if mb is not None else f"memory: {source}"


def task_memory_by_id(tasks: Iterable[Mapping[str, Any] | TaskRecord]) -> dict[str, str]:
    """``{task_id: memory_text(task)}`` for the ``devices`` views (a GPU lists its tasks' ids)."""
    out: dict[str, str] = {}
    for t in tasks:
        row: Mapping[str, Any] = t.to_row() if isinstance(t, TaskRecord) else t
        out[str(row.get("task_id"))] = memory_text(row)
    return out


def device_tasks_text(device: Mapping[str, Any], memory: Mapping[str, str], *, sep: str = ", ") -> str:
    """A GPU's tasks, each with its memory where known: ``T_0003 6000 → 4210 MB, T_0005 auto 9000 MB``
    (a task id without a row shows alone); ``-`` for none."""
    ids = [str(t) for t in device.get("tasks") or []]
    return sep.join(f"{t} {memory[t]}" if memory.get(t) else t for t in ids) or "-"


# ------------------------------------------------------------------------------------ latest metrics
LATEST_KEYS = 3  # log scalars shown in a task row: the first ones of the metrics file, in its order
_NOT_LOG = ("epoch", "step", "wall_time", "gpu_peak_mb")  # the memory column shows the peak


def task_latest_metrics(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last metrics row of a started training task (:func:`~..actors.task_rows.task_latest_metrics`);
    a row that already carries ``latest_metrics`` (the center read it, on the fast path) gives that."""
    if "latest_metrics" in task:
        latest = task["latest_metrics"]
        return dict(latest) if isinstance(latest, Mapping) else None
    from ..actors.task_rows import task_latest_metrics as read

    return read(task)


def _number(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def latest_metrics_text(row: Mapping[str, Any] | None, *, keys: int = LATEST_KEYS) -> str:
    """``ep 3 loss 0.07123 acc 0.982``: the epoch and the first ``keys`` log scalars that have a value,
    with 4 significant digits; ``""`` for no row."""
    if not row:
        return ""
    from ..savepack.metrics import is_companion

    parts = [f"ep {row['epoch']}"] if row.get("epoch") is not None else []
    shown = 0
    names = list(row)
    for key, value in row.items():
        if shown >= keys:
            break
        if key in _NOT_LOG or value is None or is_companion(key, names):  # loss.last: loss says it
            continue
        parts.append(f"{key} {_number(value)}")
        shown += 1
    return " ".join(parts)


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def with_latest_metrics(tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The task rows for ``tasks --json``, each with ``latest_metrics``: its last metrics row (all
    columns; NaN and infinities as null, for strict JSON) or null (see :func:`task_latest_metrics`)."""
    out: list[dict[str, Any]] = []
    for t in tasks:
        row = task_latest_metrics(t)
        latest = {k: _json_value(v) for k, v in row.items()} if row is not None else None
        out.append({**t, "latest_metrics": latest})
    return out


def tasks_table(tasks: Sequence[Mapping[str, Any]], *, title: str) -> Any:
    """The task list as a rich Table; a started training task's ``latest`` cell shows its last metrics
    row (:func:`latest_metrics_text`), read from its package (the CLI shares the packages' filesystem)."""
    from rich.markup import escape
    from rich.table import Table

    now = time.time()
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, kw in (
        ("id", {"no_wrap": True}),
        ("status", {"no_wrap": True}),
        ("devices", {"no_wrap": True}),
        ("memory/GPU", {"justify": "right", "no_wrap": True}),
        ("package", {"overflow": "fold"}),
        ("description", {}),
        ("submitted", {"no_wrap": True}),
        ("ran", {"justify": "right", "no_wrap": True}),
        ("latest", {"overflow": "fold"}),
        ("wait reason / error", {"overflow": "fold"}),
    ):
        table.add_column(name, **kw)
    for t, first in _grouped(tasks):
        status = str(t["status"])
        sweep = str(t.get("sweep") or "")
        if first:  # a sweep's trials come together, under a line of their sweep
            trials = [r for r in tasks if r.get("sweep") == sweep]
            counts = Counter(str(r["status"]).lower() for r in trials)
            summary = " · ".join(f"{n} {name}" for name, n in counts.most_common())
            table.add_row(f"[bold]{sweep}[/]", summary, "", "", "", "sweep (its trials below)")
        table.add_row(
            f"  {t['task_id']}" if sweep else str(t["task_id"]),
            f"[{_style(t)}]{status}[/]" + _phase_note(t),
            task_devices(t),
            memory_text(t),
            # user text (names, descriptions, errors, metric names) is escaped: `KeyError: '[model]'`
            # would otherwise lose `[model]` as a style tag
            escape(Path(str(t.get("package", ""))).name),
            escape(str(t.get("description") or "")),
            stamp(t.get("submitted_at")),
            task_ran(t, now),
            escape(latest_metrics_text(task_latest_metrics(t))),
            escape(_note(t)),
        )
    return table


def _grouped(tasks: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], bool]]:
    """The rows in order, each sweep's trials moved together to where its first trial is; with each row,
    whether it is the first of its sweep (a sweep line goes before it)."""
    out: list[tuple[Mapping[str, Any], bool]] = []
    placed: set[str] = set()
    for t in tasks:
        sweep = str(t.get("sweep") or "")
        if not sweep:
            out.append((t, False))
        elif sweep not in placed:
            placed.add(sweep)
            trials = [r for r in tasks if r.get("sweep") == sweep]
            out += [(r, i == 0) for i, r in enumerate(trials)]
    return out


def devices_table(
    devices: Iterable[Mapping[str, Any]], tasks: Iterable[Mapping[str, Any] | TaskRecord] = ()
) -> Any:
    """The GPUs as a rich Table; each GPU's tasks with their memory (:func:`memory_text`: reserved →
    measured) when ``tasks`` holds their rows."""
    from rich.markup import escape
    from rich.table import Table

    memory = task_memory_by_id(tasks)
    table = Table(title="GPUs", title_justify="left")
    table.add_column("device", no_wrap=True)
    for name in ("total MB", "free MB", "reserved MB"):
        table.add_column(name, justify="right")
    table.add_column("tasks")
    table.add_column("enabled", justify="center")
    for d in devices:
        table.add_row(
            f"{d['node']}:gpu{d['gpu']}",
            str(d["total_mb"]),
            str(d["free_mb"]),
            str(d["reserved_mb"]),
            escape(device_tasks_text(d, memory)),
            "yes" if d.get("enabled", True) else "[red]no[/]",
        )
    return table


def settings_table(settings: Mapping[str, Any], devices: Iterable[Mapping[str, Any]]) -> Any:
    from rich.table import Table

    labels = [f"{d['node']}:gpu{d['gpu']}" for d in devices]
    disabled = set(settings.get("disabled") or [])
    table = Table(title="Settings", title_justify="left", show_header=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_row("enabled devices", " ".join(x for x in labels if x not in disabled) or "none")
    table.add_row("disabled devices", " ".join(sorted(disabled)) or "none")
    table.add_row("max tasks per device", str(settings.get("max_tasks_per_device")))
    table.add_row("scheduling delay (s)", f"{float(settings.get('delay_s', 0)):g}")
    if "retries" in settings:
        table.add_row("default retries", f"{settings['retries']} (unless --retries or the config says)")
    if "margin" in settings:
        table.add_row(
            "memory margin", f"{float(settings['margin']):g} (right-sized = measured peak × margin)"
        )
    if "starvation_s" in settings:
        table.add_row("starvation bound (s)", f"{float(settings['starvation_s']):g}")
    if "notify_webhook" in settings:
        table.add_row("notify webhook", str(settings["notify_webhook"] or "none"))
    return table
