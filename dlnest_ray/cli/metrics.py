"""``dlnest-ray metrics PACKAGE``: a package's per-epoch metrics as a table, JSON or a PNG of the curves.

Reads only the package folder (no cluster, no Ray, no torch); pyarrow and matplotlib are imported inside
the command, so ``dlnest-ray --help`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import DlnestError
from .options import JsonOpt

__all__ = ["clean_number", "format_number", "metrics", "parse_keys"]

PlotOpt = Annotated[
    Path | None,
    typer.Option("--plot", metavar="FILE.png", help="Also write the curves against epoch to this PNG."),
]


def emit(out: dict[str, Any], written: Path | None, table: Callable[[], None], *, as_json: bool) -> None:
    """The end of ``metrics`` and ``compare``: ``out`` as JSON (with ``plot`` when one was written), or
    the table and the plot's path."""
    if as_json:
        from .tables import print_json

        print_json({**out, "plot": str(written)} if written is not None else out)
        return
    table()
    if written is not None:
        typer.echo(f"plot: {written}")


def format_number(value: float | int | None) -> str:
    """Table text for a metric value: 6 significant digits, ``-`` when the epoch did not record it."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.6g}"


def clean_number(value: float | int | None) -> float | int | None:
    """A value for strict JSON: NaN and infinities become ``null`` (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_keys(
    text: str | None, available: Sequence[str], *, default: Sequence[str], where: str
) -> list[str]:
    """``--keys a,b`` → ``["a", "b"]`` (order kept, repeats dropped); ``None`` → ``default``.

    Raises a :class:`DlnestError` naming ``available`` for an unknown or empty selection.
    """
    if text is None:
        return list(default)
    # epoch is always the first column: naming it is not an error, and it is not repeated
    keys = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip() and k.strip() != "epoch"))
    choices = ", ".join(available) or "none"
    if not keys:
        raise DlnestError(f"--keys needs metric names separated by commas; available in {where}: {choices}")
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise DlnestError(
            f"unknown metric key {', '.join(map(repr, unknown))} in {where}; available: {choices}"
        )
    return keys


def metrics(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="A save package folder.")],
    plot: PlotOpt = None,
    keys: Annotated[
        str | None,
        typer.Option(
            "--keys", "-k", metavar="KEY,KEY", help="Only these columns (comma-separated), e.g. loss,acc."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a package's per-epoch metrics (metrics.parquet): one row per finished epoch.

    Columns: epoch, then every metric of the log dict (or --keys; step and wall_time on request).

    --plot FILE.png draws each column against epoch (needs the `plot` extra); --json prints the rows.
    """
    # --json: {"package", "keys", "rows": [{"epoch", KEY: value}]}, plus "plot" with --plot; NaN and
    # infinities are null (strict JSON), a value an epoch did not record is null too.
    from ..savepack.compare import load_metrics
    from ..savepack.metrics import METRICS_FILE
    from ..savepack.package import SavePackage
    from .plotting import require_matplotlib

    if plot is not None:
        require_matplotlib()  # before any work or output, so the install hint is the only thing shown
    pkg = SavePackage.open(package)
    assert pkg.path is not None
    data = load_metrics(pkg.path)
    if data is None:
        raise DlnestError(
            f"{pkg.path} has no {METRICS_FILE}: no epoch has finished in it yet "
            "(a row is written at the end of every epoch)"
        )
    from ..savepack.facts import package_description

    desc = package_description(pkg.meta)
    label = f"{desc} ({pkg.path.name})" if desc else pkg.path.name  # what the run is, then where
    available = [c for c in data.numeric_columns if c != "epoch"]
    chosen = parse_keys(keys, available, default=data.metric_names, where=pkg.path.name)
    rows = sorted(data.rows, key=lambda r: int(r["epoch"]))

    written: Path | None = None
    if plot is not None:
        if not rows:
            raise DlnestError(f"{pkg.path} has no finished epoch to plot")
        if not chosen:
            raise DlnestError(f"{pkg.path} recorded no metrics to plot; try --keys step")
        written = _plot(plot, label, rows, chosen)

    out: dict[str, Any] = {
        "package": str(pkg.path),
        "keys": chosen,
        "rows": [{"epoch": int(r["epoch"]), **{k: clean_number(r.get(k)) for k in chosen}} for r in rows],
    }
    emit(out, written, lambda: _print_table(label, rows, chosen), as_json=as_json)


def _print_table(label: str, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .tables import console

    table = Table(title=f"Metrics of {escape(label)}", title_justify="left")
    table.add_column("epoch", justify="right", no_wrap=True)
    for k in keys:
        table.add_column(k, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(str(int(r["epoch"])), *(format_number(r.get(k)) for k in keys))
    console().print(table)
    if not rows:
        typer.echo("no finished epoch yet")


def _plot(target: Path, label: str, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> Path:
    from .plotting import Curve, Panel, save_panels

    epochs = [int(r["epoch"]) for r in rows]
    panels = [
        Panel(title=k, ylabel=k, curves=[Curve(label=label, x=epochs, y=[r.get(k) for r in rows])])
        for k in keys
    ]
    return save_panels(target, panels, title=label)
