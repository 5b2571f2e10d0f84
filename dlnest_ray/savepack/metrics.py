"""``metrics.parquet``: one row per finished epoch, from the log dict (written by rank 0).

Columns: ``epoch`` (int), ``step`` (global step, int), ``wall_time`` (unix seconds, float), then every
scalar of the log dict as float64 — a number, a one-element tensor/array, or the last element of a list
of those. Keys that appear later get nulls in earlier rows. The file is rewritten atomically each epoch
(parquet cannot be appended); on resume from an older checkpoint, rows of the abandoned epochs are dropped.
"""

from __future__ import annotations

import functools
import io
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

__all__ = ["METRICS_FILE", "MetricsLog", "latest_metrics", "read_metrics", "scalar_row"]

METRICS_FILE = "metrics.parquet"
_RESERVED = ("epoch", "step", "wall_time")


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    try:
        count = numel() if callable(numel) else numel
        if count == 1 and hasattr(value, "item"):
            item = value.item()
            return float(item) if isinstance(item, (numbers.Real, bool)) else None
    except (TypeError, ValueError, RuntimeError):
        return None
    return None


def scalar_row(log: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a log dict: a value, or the last element of a list/tuple value."""
    row: dict[str, float] = {}
    for key, value in log.items():
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            value = value[-1]
        x = _scalar(value)
        if x is not None:
            name = str(key)
            row[f"log.{name}" if name in _RESERVED else name] = x if not math.isnan(x) else float("nan")
    return row


class MetricsLog:
    """The rows of one package's metrics file, held in memory and rewritten on each append."""

    def __init__(self, package: Path) -> None:
        self.path = Path(package) / METRICS_FILE
        self.rows: list[dict[str, Any]] = read_metrics(self.path).to_pylist() if self.path.exists() else []

    def drop_after(self, finished_epoch: int) -> None:
        """Forget rows of epochs after ``finished_epoch`` (the run continues from there)."""
        kept = [r for r in self.rows if r.get("epoch", -1) <= finished_epoch]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._write()

    def append(self, *, epoch: int, step: int, wall_time: float, log: Mapping[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": epoch, "step": step, "wall_time": wall_time, **scalar_row(log)}
        self.rows = [r for r in self.rows if r.get("epoch") != epoch]
        self.rows.append(row)
        self._write()
        return row

    def _write(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        columns: dict[str, Any] = {}
        for k in keys:
            values = [r.get(k) for r in self.rows]
            typ = pa.int64() if k in ("epoch", "step") else pa.float64()
            columns[k] = pa.array(values, type=typ)
        table = pa.table(columns) if columns else pa.table({"epoch": pa.array([], pa.int64())})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        atomic_write_bytes(self.path, buf.getvalue())


def read_metrics(path: Path) -> Any:
    """The metrics table (a ``pyarrow.Table``) of ``path`` (a package folder or the parquet file)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    return pq.read_table(p)


def latest_metrics(path: Path) -> dict[str, Any] | None:
    """The last row of ``path``'s metrics (a package folder or the parquet file) as a dict — ``epoch``,
    ``step``, ``wall_time`` and the log's scalars (None where the row has no value) — or None when there
    is no file, no row, or the file cannot be read (being replaced, truncated, not parquet): callers are
    status displays, which show nothing rather than fail.

    Cheap enough to call for every row of a task list on every refresh: only the last row group is
    decoded, and the answer is cached until the file's modification time or size changes.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    try:
        st = p.stat()
    except OSError:
        return None
    row = _last_row(str(p), st.st_mtime_ns, st.st_size)
    return dict(row) if row is not None else None


@functools.lru_cache(maxsize=256)
def _last_row(path: str, mtime_ns: int, size: int) -> dict[str, Any] | None:
    del mtime_ns, size  # cache keys only: a rewritten file (atomic rename) has a new mtime or size
    try:
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as f:
            if f.metadata.num_rows == 0:
                return None
            last = next(i for i in reversed(range(f.num_row_groups)) if f.metadata.row_group(i).num_rows)
            group = f.read_row_group(last)
            rows = group.slice(group.num_rows - 1).to_pylist()
    except Exception:  # pyarrow's own error types, OSError, a file replaced while read...
        return None
    return rows[0] if rows else None
