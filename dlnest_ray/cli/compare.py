"""``dlnest-ray compare PACKAGE PACKAGE...``: several runs side by side, from their save packages alone
(``compare S_0001``, a sweep's trials ranked: :mod:`.compare_sweep`).

One table, one column per run (labelled by the run's description, else its folder name): status,
finished epochs, wall time, devices, GPU memory reserved → measured (``memory (MB)``), the config keys
whose values differ between the runs (rows ``cfg a.b.c``), and the final and best value of every metric
(``gpu_peak_mb`` among them; the rule for "best" is in :mod:`dlnest_ray.savepack.compare`). No cluster
and no Ray: only the package folders are read; pyarrow and matplotlib are imported inside the command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import DlnestError
from .metrics import clean_number, emit, format_number
from .options import AddressOpt, JsonOpt

if TYPE_CHECKING:  # only for annotations: the command imports these inside its body
    from ..savepack.compare import RunData, RunSummary

__all__ = ["compare"]

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "interrupted": "magenta",
    "unfinished": "yellow",
}


def compare(
    packages: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="PACKAGE... | S_0001",
            help="Two or more save package folders, or one sweep (its id, or its folder).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Also write one metric of every run to this PNG."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            metavar="NAME",
            help="With --plot: the metric to overlay (default: the first common one). With a sweep: the "
            "metric to rank by (default: the stop rule's, else the first common acc/score-like one).",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", metavar="K", help="With a sweep: show the K best trials.", show_default=False),
    ] = None,
    address: AddressOpt = None,
) -> None:
    """Compare runs side by side: config keys that differ, final and best metrics, epochs, wall time, status.

    Reads the save packages only (no cluster). Best: the max for acc/score/f1/auc/map/iou..., else the min.

    --plot FILE.png overlays one metric (--metric, default: the first common one) of every run.

    compare S_0001 ranks a sweep's trials by their best value of --metric (default: the stop rule's
    metric, with its goal), showing the keys that vary; --top K keeps the K best; --plot overlays their
    curves. A sweep's folder (with _sweep.json) works without the cluster.
    """
    # --json: {"packages", "differing_keys", "common_metrics", "runs": [{"name", "package", "status",
    # "epochs", "wall_time_s", "devices", "world_size", "peak_gpu_mb", "reserved_mb", "config", "metrics":
    # {NAME: {"goal", "final", "best", "best_epoch"}}}]}, plus "plot" with --plot. A config key a run
    # lacks is left out of its "config"; NaN and infinities are null (strict JSON).
    from ..savepack.compare import common_metrics, differing_keys, load_run, run_labels, summarize_run
    from .plotting import require_matplotlib

    paths = list(packages or [])
    from .compare_sweep import compare_sweep, is_sweep_target

    if len(paths) == 1 and is_sweep_target(paths[0]):
        compare_sweep(paths[0], metric=metric, top=top, plot=plot, as_json=as_json, address=address)
        return
    if top is not None:
        raise DlnestError("--top ranks a sweep's trials: give one sweep (S_0001 or its folder)")
    if len(paths) < 2:
        raise DlnestError(f"compare needs at least 2 save packages (got {len(paths)})")
    if metric is not None and plot is None:
        raise DlnestError("--metric chooses the curve of --plot FILE.png: add --plot")
    if plot is not None:
        require_matplotlib()  # before any work or output, so the install hint is the only thing shown

    runs = [load_run(p) for p in paths]
    resolved = [r.path for r in runs]
    repeated = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if repeated:
        raise DlnestError(f"the same package is given twice: {', '.join(repeated)}")
    summaries = [summarize_run(r) for r in runs]
    names = run_labels(runs)
    keys = differing_keys([s.config for s in summaries])
    common = common_metrics(summaries)

    written: Path | None = None
    if plot is not None:
        chosen = _plot_metric(metric, common, names, summaries)
        written = _plot(plot, chosen, names, runs)

    out: dict[str, Any] = {
        "packages": [str(p) for p in resolved],
        "differing_keys": keys,
        "common_metrics": common,
        "runs": [
            {
                "name": name,
                "package": str(s.path),
                "status": s.status,
                "epochs": s.epochs,
                "wall_time_s": s.wall_time_s,
                "devices": s.devices,
                "world_size": s.world_size,
                "peak_gpu_mb": s.peak_gpu_mb,
                "reserved_mb": s.reserved_mb,
                "config": {k: s.config[k] for k in keys if k in s.config},
                "metrics": {
                    m: {
                        "goal": v.goal,
                        "final": clean_number(v.final),
                        "best": clean_number(v.best),
                        "best_epoch": v.best_epoch,
                    }
                    for m, v in s.metrics.items()
                },
            }
            for name, s in zip(names, summaries, strict=True)
        ],
    }
    emit(out, written, lambda: _print_table(names, summaries, keys), as_json=as_json)


def _plot_metric(
    metric: str | None, common: Sequence[str], names: Sequence[str], summaries: Sequence[RunSummary]
) -> str:
    choices = ", ".join(common) or "none"
    if metric is None:
        if not common:
            raise DlnestError("the runs have no metric in common to plot (each needs a finished epoch)")
        return common[0]
    if metric not in common:
        lacking = [n for n, s in zip(names, summaries, strict=True) if metric not in s.metrics]
        where = f"; {', '.join(lacking)} did not record it" if lacking else ""
        raise DlnestError(
            f"--metric {metric!r} is not a metric of every run{where}; common metrics: {choices}"
        )
    return metric


def _plot(target: Path, metric: str, names: Sequence[str], runs: Sequence[RunData]) -> Path:
    from .plotting import Curve, Panel, save_panels

    curves = []
    for name, run in zip(names, runs, strict=True):
        points = run.metrics.series(metric) if run.metrics is not None else []
        curves.append(Curve(label=name, x=[e for e, _ in points], y=[v for _, v in points]))
    panel = Panel(title="", ylabel=metric, curves=curves)  # the figure title names the metric
    return save_panels(target, [panel], title=f"{metric} of {len(runs)} runs")


def _config_text(config: dict[str, Any], key: str) -> str:
    if key not in config:
        return "(absent)"
    value = config[key]
    return value if isinstance(value, str) else json.dumps(value)


def _wall_time(seconds: float | None) -> str:
    from .tables import duration

    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else duration(seconds)


def _print_table(names: Sequence[str], summaries: Sequence[RunSummary], keys: Sequence[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..savepack.compare import memory_text
    from .tables import console

    table = Table(title=f"Comparing {len(summaries)} runs", title_justify="left")
    table.add_column("", no_wrap=True)
    for name in names:
        table.add_column(escape(name), justify="right", overflow="fold")

    def row(label: str, cells: Sequence[str], *, end_section: bool = False) -> None:
        table.add_row(label, *cells, end_section=end_section)

    row("status", [f"[{_STATUS_STYLE.get(s.status, 'white')}]{escape(s.status)}[/]" for s in summaries])
    row("epochs", [str(s.epochs) for s in summaries])
    row("wall time", [_wall_time(s.wall_time_s) for s in summaries])
    devices = [
        escape(", ".join(s.devices) or "-") + (f" ×{s.world_size} ranks" if (s.world_size or 1) > 1 else "")
        for s in summaries
    ]
    if any(s.peak_gpu_mb is not None or s.reserved_mb is not None for s in summaries):  # GPU runs only
        row("devices", devices)
        row(
            "memory (MB)",  # reserved → measured peak, per GPU
            [memory_text(s.reserved_mb, s.peak_gpu_mb) for s in summaries],
            end_section=True,
        )
    else:
        row("devices", devices, end_section=True)

    if keys:
        for i, k in enumerate(keys):
            row(
                escape(f"cfg {k}"),  # a config key, never mistaken for the rows above (`epochs`)
                [escape(_config_text(s.config, k)) for s in summaries],
                end_section=i == len(keys) - 1,
            )
    else:
        row("config", ["identical"] * len(summaries), end_section=True)

    metric_names = list(dict.fromkeys(m for s in summaries for m in s.metrics))
    for m in metric_names:
        found = [s.metrics.get(m) for s in summaries]
        row(f"{escape(m)} final", [format_number(v.final) if v else "(absent)" for v in found])
        goal = next(v.goal for v in found if v is not None)
        bests = [v.best for v in found if v is not None and v.best is not None]
        top = (max(bests) if goal == "max" else min(bests)) if bests else None
        cells = []
        for v in found:
            if v is None or v.best is None:
                cells.append("-" if v is not None else "(absent)")
                continue
            text = f"{format_number(v.best)} @{v.best_epoch}"
            # the best run of the comparison stands out (when the runs differ at all)
            cells.append(f"[bold]{text}[/]" if v.best == top and len(set(bests)) > 1 else text)
        row(f"{escape(m)} best ({goal})", cells)
    console().print(table)
