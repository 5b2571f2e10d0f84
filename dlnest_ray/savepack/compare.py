"""What ``dlnest-ray metrics`` and ``dlnest-ray compare`` show about save packages.

The functions that decide something are pure (plain values in, results out) so they are tested without
packages: :func:`flatten_config`, :func:`differing_keys`, :func:`metric_goal`, :func:`summarize_metric`,
:func:`summarize_run`, :func:`common_metrics` and :func:`display_names`. Reading a package is kept apart
in :func:`load_metrics` and :func:`load_run`. No torch and no Ray here; pyarrow is imported only when a
metrics file is read.

The "best" value of a metric follows one naming rule, :func:`metric_goal`: a metric whose name contains
``acc``, ``accuracy``, ``score``, ``f1``, ``precision``, ``recall``, ``auc``, ``map`` or ``iou`` (any
case) is maximised; every other metric (losses, errors, learning rates, ...) is minimised. A name that
also contains ``loss`` or ``error`` is always minimised (``map_loss`` is a loss).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import PackageError
from . import layout
from .facts import package_description
from .metrics import BOOKKEEPING_COLUMNS, is_companion, read_metrics
from .package import SavePackage
from .records import Segment, as_manifest

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "IGNORED_CONFIG_KEYS",
    "MAXIMIZED_WORDS",
    "MetricSummary",
    "MetricsData",
    "RunData",
    "RunSummary",
    "common_metrics",
    "differing_keys",
    "display_names",
    "flatten_config",
    "load_metrics",
    "load_run",
    "memory_text",
    "metric_goal",
    "run_description",
    "run_labels",
    "segment_reserved_mb",
    "summarize_metric",
    "summarize_run",
]

log = logging.getLogger(__name__)

Goal = Literal["max", "min"]

# root_file_path is rewritten to the package's own folder when a package is opened, so it differs between
# any two packages and says nothing about the runs. Code paths are rewritten to ./... in every package, so
# they are equal anyway and need no exclusion; save_root is kept: runs saved to different roots differ.
IGNORED_CONFIG_KEYS: frozenset[str] = frozenset({"root_file_path"})

MAXIMIZED_WORDS: tuple[str, ...] = (
    "acc",
    "accuracy",
    "score",
    "f1",
    "precision",
    "recall",
    "auc",
    "map",
    "iou",
)
_MINIMIZED_WORDS: tuple[str, ...] = ("loss", "error")


# ------------------------------------------------------------------------------------------------- config
def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys: ``{"a": {"b": {"c": 1}}}`` → ``{"a.b.c": 1}``.

    Lists and scalars are leaves (compared whole); an empty dict is kept as a leaf ``{}`` so that a key
    that exists in one run and is empty in another is still seen.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _canonical(value: Any) -> Any:
    """A hashable form in which 1 == 1.0 (JSON does not tell them apart) but True != 1."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, numbers.Real):
        x = float(value)
        return ("num", "nan" if math.isnan(x) else x)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_canonical(v) for v in value))
    return ("other", repr(value))


_MISSING = ("missing",)


def differing_keys(
    configs: Sequence[Mapping[str, Any]], *, ignore: Iterable[str] = IGNORED_CONFIG_KEYS
) -> list[str]:
    """The flattened keys whose values are not all equal across ``configs`` (nested dicts allowed), sorted.

    A key present in some configs and absent from others differs. Keys in ``ignore`` (exact flattened
    names) are never reported. With fewer than two configs nothing differs.
    """
    if len(configs) < 2:
        return []
    skipped = set(ignore)
    flats = [flatten_config(c) for c in configs]
    keys = {k for f in flats for k in f} - skipped
    return sorted(k for k in keys if len({_canonical(f[k]) if k in f else _MISSING for f in flats}) > 1)


# ------------------------------------------------------------------------------------------------ metrics
def metric_goal(name: str) -> Goal:
    """``"max"`` when a larger value of metric ``name`` is better, else ``"min"`` (rule in the module doc)."""
    lowered = name.lower()
    if any(w in lowered for w in _MINIMIZED_WORDS):
        return "min"
    return "max" if any(w in lowered for w in MAXIMIZED_WORDS) else "min"


@dataclass(frozen=True, kw_only=True)
class MetricSummary:
    """One metric of one run.

    ``final``: the value of the last epoch that recorded it (NaN stays NaN: a diverged run shows it);
    ``best``/``best_epoch``: the best non-NaN value by :func:`metric_goal` and its first epoch;
    ``None`` where no epoch recorded a value.
    """

    goal: Goal
    final: float | None
    best: float | None
    best_epoch: int | None


def summarize_metric(name: str, points: Sequence[tuple[int, float | None]]) -> MetricSummary:
    """Summarise ``(epoch, value)`` points in epoch order; ``None`` values (not recorded) are skipped."""
    goal = metric_goal(name)
    recorded = [(e, float(v)) for e, v in points if v is not None]
    final = recorded[-1][1] if recorded else None
    best: float | None = None
    best_epoch: int | None = None
    for epoch, value in recorded:
        if math.isnan(value):
            continue
        if best is None or (value > best if goal == "max" else value < best):
            best, best_epoch = value, epoch
    return MetricSummary(goal=goal, final=final, best=best, best_epoch=best_epoch)


@dataclass(frozen=True, kw_only=True)
class MetricsData:
    """A metrics table as plain values: ``columns`` in file order, ``rows`` one dict per epoch."""

    columns: list[str]
    rows: list[dict[str, Any]]

    @property
    def metric_names(self) -> list[str]:
        """Every numeric column other than ``epoch``, ``step`` and ``wall_time``, in file order, without
        the ``<key>.last`` companions of epoch means (``loss.last`` beside ``loss``)."""
        names = [c for c in self.numeric_columns if c not in BOOKKEEPING_COLUMNS]
        return [c for c in names if not is_companion(c, names)]

    @property
    def numeric_columns(self) -> list[str]:
        """Columns whose values are all numbers or missing (every column dlnest-ray writes)."""
        return [
            c
            for c in self.columns
            if all(
                r.get(c) is None or (isinstance(r[c], numbers.Real) and not isinstance(r[c], bool))
                for r in self.rows
            )
        ]

    def series(self, name: str) -> list[tuple[int, float | None]]:
        """``(epoch, value)`` of column ``name`` for every row, in epoch order (``None``: not recorded)."""
        rows = sorted(self.rows, key=lambda r: int(r["epoch"]))
        return [(int(r["epoch"]), None if r.get(name) is None else float(r[name])) for r in rows]


# --------------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True, kw_only=True)
class RunData:
    """What a package holds that the summaries need, read by :func:`load_run`.

    ``args``: args.json (root_file_path is the package folder); ``meta``: the manifest's metadata
    (``SavePackage.meta``: ``segments`` as recorded by the trainer, read typed by :attr:`segments`);
    ``metrics``: ``None`` when the package has no metrics.parquet (no epoch finished yet).
    """

    path: Path
    args: dict[str, Any]
    meta: dict[str, Any]
    metrics: MetricsData | None

    @property
    def segments(self) -> list[Segment]:
        """The run segments of :attr:`meta`, oldest first."""
        return list(as_manifest(self.meta).segments)


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One run as ``compare`` shows it.

    ``epochs``: finished epochs (last metrics epoch + 1; without metrics, the last ended segment's
    ``finished_epoch`` + 1). ``wall_time_s``: the sum of ``ended - started`` over the segments that ended
    (``None`` when none did); a segment still running, or whose process was killed, has no end and adds
    nothing. ``devices``: every device the segments recorded, in order, without repeats (under DDP each
    segment records rank 0's device; ``world_size`` is the largest world size). ``peak_gpu_mb``: the
    largest ``peak_gpu_mb`` a segment recorded (``None`` on CPU or when not recorded); ``reserved_mb``: the
    largest reservation per GPU a segment recorded (:func:`segment_reserved_mb`; ``None`` when none did: CPU
    runs, foreground ``train``, packages from before reservations were recorded). ``status``: the last
    segment's status (``succeeded``, ``failed``, ``interrupted``), ``unfinished`` when it has no end yet
    (running, or killed), ``not started`` without segments.
    """

    path: Path
    metrics: dict[str, MetricSummary]
    epochs: int
    wall_time_s: float | None
    devices: list[str]
    world_size: int | None
    peak_gpu_mb: int | None
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    reserved_mb: int | None = None


def segment_reserved_mb(segment: Segment) -> int | None:
    """The GPU memory (MB per GPU) the segment's task had reserved, from its ``reserved_mb`` key; None
    when it is not recorded or not a positive number. Read by name, so a :class:`Segment` that keeps the
    key among its unknown ones (``extra``) reads the same."""
    value = getattr(segment, "reserved_mb", None)
    if value is None:
        value = segment.extra.get("reserved_mb")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    x = float(value)
    return math.ceil(x) if math.isfinite(x) and x > 0 else None


def memory_text(reserved_mb: int | None, peak_mb: int | None) -> str:
    """``compare``'s memory cell, reserved → measured in MB: ``6000 → 4210``; ``→ 4210`` with no
    reservation recorded (a foreground run); ``6000 → -`` with no peak (it ended before measuring, or ran
    on CPU); ``-`` when neither is known."""
    if reserved_mb is None and peak_mb is None:
        return "-"
    peak = "-" if peak_mb is None else str(peak_mb)
    return f"→ {peak}" if reserved_mb is None else f"{reserved_mb} → {peak}"


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None


def summarize_run(run: RunData) -> RunSummary:
    """Summarise one run (pure: reads nothing). ``config`` is the flattened args, ignored keys removed."""
    segments = run.segments
    durations = [t for s in segments if (t := s.duration_s) is not None]
    devices: list[str] = []
    for s in segments:
        for d in s.devices or ():
            if d not in devices:
                devices.append(d)
    sizes = [s.world_size for s in segments if s.world_size is not None]
    peaks: list[int] = []
    for s in segments:
        if isinstance(s.peak_gpu_mb, int):  # whole MB, as the trainer records it (math.ceil)
            peaks.append(s.peak_gpu_mb)
    reserved = [mb for s in segments if (mb := segment_reserved_mb(s)) is not None]
    if not segments:
        status = "not started"
    else:
        last = segments[-1]
        status = last.status if last.status and last.has_ended else "unfinished"

    metrics: dict[str, MetricSummary] = {}
    epochs = 0
    if run.metrics is not None and run.metrics.rows:
        epochs = max(int(r["epoch"]) for r in run.metrics.rows) + 1
        for name in run.metrics.metric_names:
            metrics[name] = summarize_metric(name, run.metrics.series(name))
    else:
        ended = [s.finished_epoch for s in segments if s.finished_epoch is not None]
        if ended:
            epochs = max(0, ended[-1] + 1)
    config = {k: v for k, v in flatten_config(run.args).items() if k not in IGNORED_CONFIG_KEYS}
    return RunSummary(
        path=run.path,
        metrics=metrics,
        epochs=epochs,
        wall_time_s=sum(durations) if durations else None,
        devices=devices,
        world_size=max(sizes) if sizes else None,
        peak_gpu_mb=max(peaks) if peaks else None,
        status=status,
        config=config,
        reserved_mb=max(reserved) if reserved else None,
    )


def common_metrics(runs: Sequence[RunSummary]) -> list[str]:
    """Metrics every run recorded at least once, in the first run's order."""
    if not runs:
        return []
    return [
        name
        for name in runs[0].metrics
        if all(name in r.metrics and r.metrics[name].final is not None for r in runs)
    ]


def display_names(paths: Sequence[Path]) -> list[str]:
    """Short, distinct labels for packages: the folder name, with as many parent folders as it takes
    to tell apart packages whose folder names are equal (``a/Saves/run`` vs ``b/Saves/run``)."""
    parts = [p.parts for p in paths]
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        clashes = {lab for lab in labels if labels.count(lab) > 1}
        grow = [i for i, lab in enumerate(labels) if lab in clashes and depth[i] < len(parts[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1


def run_description(run: RunData) -> str:
    """The run's description (:func:`~dlnest_ray.savepack.facts.package_description`)."""
    return package_description(run.meta)


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """What a person calls each run: its description, else its folder name (with parent folders where
    folder names clash, :func:`display_names`); a description two runs share gets the folder added."""
    folders = display_names([r.path for r in runs])
    labels = [run_description(r) or folder for r, folder in zip(runs, folders, strict=True)]
    clashes = {label for label in labels if labels.count(label) > 1}
    return [
        f"{label} ({folder})" if label in clashes and label != folder else label
        for label, folder in zip(labels, folders, strict=True)
    ]


# ------------------------------------------------------------------------------------------------ reading
def load_metrics(package: Path) -> MetricsData | None:
    """The package's metrics.parquet as plain values; ``None`` when the file does not exist."""
    path = layout.metrics_path(package)
    if not path.is_file():
        return None
    try:
        table = read_metrics(path)
    except Exception as e:  # pyarrow raises its own types for a truncated or foreign file
        raise PackageError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    return MetricsData(columns=list(table.column_names), rows=table.to_pylist())


def load_run(package: str | Path) -> RunData:
    """Open ``package`` (a :class:`PackageError` says so when it is not one) and read what summaries need."""
    pkg = SavePackage.open(package)
    assert pkg.path is not None
    return RunData(path=pkg.path, args=dict(pkg.args), meta=pkg.meta, metrics=load_metrics(pkg.path))
