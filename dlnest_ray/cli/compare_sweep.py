"""``dlnest-ray compare S_0001`` (or a sweep's folder): a sweep's trials ranked by one metric.

Ranking (:mod:`dlnest_ray.sweeps.ranking`): by each trial's best value of the metric — ``--metric``,
else the stop rule's, else the first metric the trials share that is maximised (an accuracy, a score:
:func:`~dlnest_ray.savepack.compare.metric_goal`), else the first they share — with the stop rule's
goal for its metric, else ``compare``'s naming rule. The table shows only the config keys that vary
between trials; ``--top K`` keeps the K best; ``--plot FILE.png`` overlays the shown trials' curves. A
sweep id is looked up on the cluster (the trials' states come from the center); a sweep folder (with
``_sweep.json``) is read alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import DlnestError
from .metrics import clean_number, emit, format_number

if TYPE_CHECKING:
    from ..sweeps.ranking import RankedTrial, TrialData
    from ..sweeps.records import SweepRecord

__all__ = ["compare_sweep", "is_sweep_target"]


def is_sweep_target(target: Path) -> bool:
    """Whether ``compare``'s one argument names a sweep: an ``S_0001`` id (no such path here) or a
    sweep's folder (it holds ``_sweep.json``)."""
    from ..savepack import layout
    from ..sweeps.records import is_sweep_id

    if target.is_dir():
        return layout.sweep_file(target).is_file()
    return is_sweep_id(str(target)) and not target.exists()


def _from_folder(folder: Path) -> tuple[SweepRecord, dict[str, tuple[str, str]]]:
    """The sweep of a sweep folder's ``_sweep.json``; each trial's status from its package."""
    from ..savepack import layout
    from ..savepack.compare import load_run, summarize_run
    from ..sweeps.records import SweepRecord

    path = layout.sweep_file(folder)
    try:
        record = SweepRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DlnestError(f"{path} is unreadable ({type(e).__name__}: {e})") from None
    stops = {s.task_id: s.reason for s in record.stops}
    states = {}
    for trial in record.trials:
        try:
            status = summarize_run(load_run(trial.package)).status
        except DlnestError:
            status = "missing"
        states[trial.task_id] = (status, stops.get(trial.task_id, ""))
    return record, states


def _from_center(sweep_id: str, address: str | None) -> tuple[SweepRecord, dict[str, tuple[str, str]]]:
    from .cluster import connect_client

    info = connect_client(address, create=False).get_sweep(sweep_id)
    return info.record, {t.task_id: (str(t.status), t.stop_reason) for t in info.tasks}


Series = dict[str, list[tuple[int, float | None]]]  # metric name → (epoch, value) points


def _trials(
    record: SweepRecord, states: dict[str, tuple[str, str]]
) -> tuple[list[tuple[TrialData, Series]], list[str]]:
    """Each trial (its points still empty) with its metrics' points, and the metrics every trial with a
    metrics file recorded (in the first one's order)."""
    from ..savepack.compare import load_metrics
    from ..sweeps.ranking import TrialData

    out: list[tuple[TrialData, Series]] = []
    shared: list[str] | None = None
    for trial in record.trials:
        status, stop_reason = states.get(trial.task_id, ("missing", ""))
        try:
            data = load_metrics(Path(trial.package))
        except DlnestError:
            data = None
        names = data.metric_names if data is not None and data.rows else []
        if names:
            shared = [m for m in (shared if shared is not None else names) if m in names]
        series = {m: data.series(m) for m in names} if data is not None else {}
        row = TrialData(
            task_id=trial.task_id,
            values=trial.values,
            label=trial.label,
            package=trial.package,
            status=status,
            stop_reason=stop_reason,
        )
        out.append((row, series))
    return out, shared or []


def compare_sweep(
    target: Path,
    *,
    metric: str | None,
    top: int | None,
    plot: Path | None,
    as_json: bool,
    address: str | None,
) -> None:
    """The ranking of a sweep's trials (module doc)."""
    from dataclasses import replace

    from ..savepack.compare import metric_goal
    from ..sweeps.ranking import rank_trials
    from ..sweeps.stopping import parse_rule
    from .plotting import require_matplotlib

    if top is not None and top < 1:
        raise DlnestError(f"--top must be 1 or more (got {top})")
    if plot is not None:
        require_matplotlib()
    if target.is_dir():
        record, states = _from_folder(target)
    else:
        record, states = _from_center(str(target), address)
    trials, shared = _trials(record, states)
    rule = parse_rule(record.stop) if record.stop else None
    if metric is None:
        if rule is not None:
            metric = rule.metric
        elif shared:  # a metric to maximise (an accuracy, a score) says more than a training loss
            metric = next((m for m in shared if metric_goal(m) == "max"), shared[0])
        else:
            raise DlnestError(
                f"{record.sweep_id}: no trial has recorded a metric yet (none finished an epoch)"
            )
    if not any(metric in s for _, s in trials) and any(s for _, s in trials):
        known = ", ".join(shared) or "none in common"
        raise DlnestError(f"{record.sweep_id}: no trial recorded the metric {metric!r}; metrics: {known}")
    goal = rule.mode if rule is not None and rule.metric == metric else metric_goal(metric)
    ranked = rank_trials([replace(t, points=tuple(s.get(metric, ()))) for t, s in trials], goal)
    shown = ranked[:top] if top is not None else ranked
    varying = list(record.varying) or list(record.spec.get("space") or {})

    written = None
    if plot is not None:
        written = _plot(plot, metric, record.sweep_id, shown)
    out: dict[str, Any] = {
        "sweep_id": record.sweep_id,
        "metric": metric,
        "goal": goal,
        "stop": record.stop or None,
        "varying_keys": varying,
        "trials": [
            {
                "rank": r.rank,
                "task_id": r.trial.task_id,
                "package": r.trial.package,
                "status": r.trial.status,
                "values": {k: r.trial.values.get(k) for k in varying},
                "best": clean_number(r.best),
                "best_epoch": r.best_epoch,
                "final": clean_number(r.final),
                "epochs": r.epochs,
                "stop_reason": r.trial.stop_reason or None,
            }
            for r in shown
        ],
    }
    emit(out, written, lambda: _print(record, metric, goal, varying, shown, len(ranked)), as_json=as_json)


def _plot(target: Path, metric: str, sweep_id: str, shown: list[RankedTrial]) -> Path:
    from .plotting import Curve, Panel, save_panels

    curves = [
        Curve(
            label=f"{r.trial.task_id} {r.trial.label}",
            x=[e for e, _ in r.trial.points],
            y=[v for _, v in r.trial.points],
        )
        for r in shown
        if r.trial.points
    ]
    if not curves:
        raise DlnestError(f"{sweep_id}: no trial has a value of {metric!r} to plot yet")
    return save_panels(
        target, [Panel(title="", ylabel=metric, curves=curves)], title=f"{metric} of {sweep_id}"
    )


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _print(
    record: SweepRecord, metric: str, goal: str, varying: list[str], shown: list[RankedTrial], total: int
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..sweeps.space import trial_label
    from .tables import STATUS_STYLE, console, row_status

    names = trial_label(dict.fromkeys(varying, 0), varying).split(" ")  # short names: "lr=0" ...
    more = f" (the best {len(shown)} of {total})" if len(shown) < total else ""
    title = f"{record.sweep_id}: {total} trials ranked by best {metric} ({goal}){more}"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for n in names:
        table.add_column(escape(n.rsplit("=", 1)[0]), justify="right")
    for column in (f"best {metric}", "@epoch", "final", "epochs"):
        table.add_column(escape(column), justify="right")
    table.add_column("note", overflow="fold")
    for r in shown:
        status = row_status({"status": r.trial.status})
        style = STATUS_STYLE[status] if status is not None else "white"
        table.add_row(
            "-" if r.rank is None else str(r.rank),
            r.trial.task_id,
            f"[{style}]{escape(r.trial.status)}[/]",
            *[escape(_value_text(r.trial.values.get(k))) for k in varying],
            format_number(r.best) if r.best is not None else "-",
            "-" if r.best_epoch is None else str(r.best_epoch),
            format_number(r.final) if r.final is not None else "-",
            str(r.epochs),
            escape(r.trial.stop_reason),
        )
    console().print(table)
    if record.stop:
        typer.echo(f"stop rule: {record.stop}")
