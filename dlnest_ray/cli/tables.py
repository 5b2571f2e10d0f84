"""Rich tables for the cluster commands (people), and the one JSON printer (scripts).

Only rich is imported here (no Ray): the rows are the plain dicts the center returns.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "console",
    "devices_table",
    "duration",
    "print_json",
    "settings_table",
    "stamp",
    "task_devices",
    "tasks_table",
]

STATUS_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


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
    if task["status"] == "PENDING":
        return str(task.get("wait_reason") or "")
    if task["status"] in ("FAILED", "CANCELLED"):
        return str(task.get("error") or "")
    return ""


def _ran(task: Mapping[str, Any], now: float) -> str:
    started = task.get("started_at")
    if started is None:
        return "-"
    return duration((task.get("ended_at") or now) - started)


def _phase_note(task: Mapping[str, Any]) -> str:
    """A running task that is not running yet (or any more) says so: its supervisor's phase."""
    phase = task.get("phase") or ""
    if task.get("cancelling"):
        return " (stopping)"
    return f" ({phase})" if task.get("status") == "RUNNING" and phase and phase != "running" else ""


def tasks_table(tasks: Sequence[Mapping[str, Any]], *, title: str) -> Any:
    from rich.table import Table

    now = time.time()
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, kw in (
        ("id", {"no_wrap": True}),
        ("status", {"no_wrap": True}),
        ("devices", {"no_wrap": True}),
        ("MB/GPU", {"justify": "right"}),
        ("package", {"overflow": "fold"}),
        ("description", {}),
        ("submitted", {"no_wrap": True}),
        ("ran", {"justify": "right", "no_wrap": True}),
        ("wait reason / error", {"overflow": "fold"}),
    ):
        table.add_column(name, **kw)
    for t in tasks:
        status = str(t["status"])
        mb = t.get("mb_per_gpu") or 0
        requested = t.get("memory_mb")
        mb_text = str(mb) if mb else (f"({requested})" if requested and t.get("placement") != "cpu" else "-")
        table.add_row(
            str(t["task_id"]),
            f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]" + _phase_note(t),
            task_devices(t),
            mb_text,
            Path(str(t.get("package", ""))).name,
            str(t.get("description") or ""),
            stamp(t.get("submitted_at")),
            _ran(t, now),
            _note(t),
        )
    return table


def devices_table(devices: Iterable[Mapping[str, Any]]) -> Any:
    from rich.table import Table

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
            ", ".join(d.get("tasks") or []) or "-",
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
    if "starvation_s" in settings:
        table.add_row("starvation bound (s)", f"{float(settings['starvation_s']):g}")
    return table
