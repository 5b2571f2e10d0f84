"""Task rows as ``tasks`` shows them: each record's row with the last metrics row of its package.

Used by the CLI and, on the fast path, by the center (which has pyarrow loaded already), so a ``tasks``
typed on the head neither imports pyarrow nor reads a Parquet file per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..tasks import TaskKind, TaskRecord, TaskStatus

__all__ = ["rows_with_metrics", "task_latest_metrics"]


def task_latest_metrics(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last metrics row of a training task that has started (running or ended), read from
    ``<package>/metrics.parquet``; None for pending tasks, analyzers, tasks that never ran (a continue
    deleted while pending would otherwise show the previous run's numbers) and packages without a
    readable file. Never raises: pyarrow is imported here, on first use."""
    try:
        status = TaskStatus(str(task.get("status")))
    except ValueError:
        return None
    if task.get("kind", "T") != TaskKind.TRAIN or status is TaskStatus.PENDING:
        return None
    if task.get("started_at") is None:
        return None
    package = task.get("package")
    if not package:
        return None
    from ..savepack.metrics import latest_metrics

    return latest_metrics(Path(str(package)))


def rows_with_metrics(records: Iterable[TaskRecord]) -> list[dict[str, Any]]:
    """Each record's ``to_row()`` with ``latest_metrics``: its last metrics row as read (NaN kept) or None."""
    rows = [r.to_row() for r in records]
    return [{**row, "latest_metrics": task_latest_metrics(row)} for row in rows]
