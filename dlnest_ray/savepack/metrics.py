"""``metrics.parquet``: one row per finished epoch, from the log dict (written by rank 0).

Columns: ``epoch`` (int), ``step`` (global step, int), ``wall_time`` (unix seconds, float), then every
scalar of the log dict as float64 — a number, a one-element tensor/array, or, for a list of those, the
epoch's value: a list that grew by more than one value during the epoch (a loss appended every step)
gives the **mean of this epoch's values** in ``<key>`` and its last value in ``<key>.last``; a list that
grew by one (an accuracy appended once per epoch) or not at all gives its last value. Keys that appear
later get nulls in earlier rows. The file is rewritten atomically each epoch (parquet cannot be
appended); on resume from an older checkpoint, rows of the abandoned epochs are dropped. Files written
before the means existed (``loss`` = the last step's) read as they are.
"""

from __future__ import annotations

import functools
import io
import logging
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from . import layout

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "LAST_SUFFIX",
    "METRICS_FILE",
    "ListMarks",
    "MetricsLog",
    "is_companion",
    "latest_metrics",
    "list_marks",
    "read_metrics",
    "scalar_item",
    "scalar_row",
    "scalar_value",
]

log = logging.getLogger(__name__)

METRICS_FILE = layout.METRICS_FILE
LAST_SUFFIX = ".last"  # the last value of a list whose epoch value is a mean
# the columns every row has besides the log's scalars (a log key of that name becomes ``log.<key>``);
# the one definition: compare and TensorBoard leave them out of the metrics they show
BOOKKEEPING_COLUMNS: tuple[str, ...] = ("epoch", "step", "wall_time")

ListMarks = Mapping[str, tuple[int, int]]  # key → (id of the list, its length) at an epoch's start


def list_marks(log: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Where every list of the log dict stands now (taken at an epoch's start): what is appended after
    this is the epoch's. The list's identity is kept, so a list the user replaced counts whole."""
    return {str(k): (id(v), len(v)) for k, v in log.items() if isinstance(v, (list, tuple))}


def is_companion(name: str, names: Sequence[str]) -> bool:
    """``loss.last`` next to ``loss``: a detail column that displays leave out unless asked for."""
    return name.endswith(LAST_SUFFIX) and name[: -len(LAST_SUFFIX)] in names


def scalar_item(value: Any) -> Any:
    """The number ``value`` holds, as it is (an int stays an int, a bool a bool): a real number (numpy's
    included), or the item of a one-element tensor/array of any shape (0-d or not); None for anything
    else (a string, a list, a bigger or empty tensor, a complex number)."""
    if isinstance(value, numbers.Real):  # bool, int, float, numpy's scalars
        return value
    numel = getattr(value, "numel", None) or getattr(value, "size", None)  # torch: numel(); numpy: size
    try:
        count = numel() if callable(numel) else numel
        if count == 1 and hasattr(value, "item"):
            item = value.item()
            return item if isinstance(item, numbers.Real) else None
    except (TypeError, ValueError, RuntimeError):  # not a one-element number: not a scalar, as documented
        return None
    return None


def scalar_value(value: Any) -> float | None:
    """:func:`scalar_item` as a float (True is 1.0), or None when ``value`` is not a scalar."""
    item = scalar_item(value)
    return None if item is None else float(item)


def _epoch_values(key: str, value: list[Any] | tuple[Any, ...], marks: ListMarks | None) -> list[Any]:
    """The values a list gained during the epoch (``marks``: where it stood at its start)."""
    if marks is None:
        return list(value[-1:])
    mark = marks.get(key)
    if mark is None or mark[0] != id(value) or mark[1] > len(value):
        return list(value)  # a new or replaced list: all of it is this epoch's
    return list(value[mark[1] :])


def scalar_row(log: Mapping[str, Any], marks: ListMarks | None = None) -> dict[str, float]:
    """The scalars of a log dict: a value, or a list/tuple's epoch value (module doc): the mean of the
    values it gained since ``marks`` when more than one (and ``<key>.last``), else its last value.
    Without ``marks`` a list gives its last value."""
    row: dict[str, float] = {}
    for key, value in log.items():
        name = str(key)
        name = f"log.{name}" if name in BOOKKEEPING_COLUMNS else name
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            gained = [x for x in map(scalar_value, _epoch_values(str(key), value, marks)) if x is not None]
            last = scalar_value(value[-1])
            if len(gained) > 1:
                row[name] = sum(gained) / len(gained)  # NaN or inf stays visible
                if last is not None:
                    row[name + LAST_SUFFIX] = last
            elif last is not None:
                row[name] = last
            continue
        x = scalar_value(value)
        if x is not None:
            row[name] = x
    return row


class MetricsLog:
    """The rows of one package's metrics file, held in memory and rewritten on each append."""

    def __init__(self, package: Path) -> None:
        self.path = layout.metrics_path(package)
        self.rows: list[dict[str, Any]] = read_metrics(self.path).to_pylist() if self.path.exists() else []

    def drop_after(self, finished_epoch: int) -> None:
        """Forget rows of epochs after ``finished_epoch`` (the run continues from there)."""
        kept = [r for r in self.rows if r.get("epoch", -1) <= finished_epoch]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._write()

    def append(
        self,
        *,
        epoch: int,
        step: int,
        wall_time: float,
        log: Mapping[str, Any],
        marks: ListMarks | None = None,
    ) -> dict[str, Any]:
        """Record the epoch's row (``marks``: :func:`list_marks` of the log at the epoch's start)."""
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "wall_time": wall_time,
            **scalar_row(log, marks),
        }
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
        p = layout.metrics_path(p)
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
        p = layout.metrics_path(p)
    try:
        st = p.stat()
    except OSError:  # no epoch finished yet (or no package): the documented None, nothing to log
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
    except Exception as e:  # pyarrow's own error types, OSError, a file replaced while read...
        log.debug("cannot read the last metrics row of %s: %s: %s", path, type(e).__name__, e)
        return None
    return rows[0] if rows else None
