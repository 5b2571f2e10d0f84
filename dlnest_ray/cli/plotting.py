"""PNG plots for ``metrics --plot`` and ``compare --plot``, drawn with matplotlib's Agg canvas.

matplotlib is the optional extra ``plot`` and is imported only inside :func:`require_matplotlib`, so the
CLI loads without it. The figure is built with ``matplotlib.figure.Figure`` and an Agg canvas, never
through ``pyplot``: no global backend switch, no display needed, nothing left open between calls.
Every figure is ``FIGSIZE_IN`` at ``DPI``, so a PNG is exactly ``PNG_SIZE_PX`` pixels.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import DlnestError

__all__ = [
    "DPI",
    "FIGSIZE_IN",
    "MISSING_MATPLOTLIB",
    "PNG_SIZE_PX",
    "Curve",
    "Panel",
    "require_matplotlib",
    "save_panels",
]

FIGSIZE_IN = (8.0, 5.0)
DPI = 100
PNG_SIZE_PX = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))
MISSING_MATPLOTLIB = "--plot needs matplotlib: pip install 'dlnest-ray[plot]'"


@dataclass(frozen=True, kw_only=True)
class Curve:
    """One line: ``y[i]`` at epoch ``x[i]``; ``None`` (not recorded that epoch) leaves a gap."""

    label: str
    x: Sequence[int]
    y: Sequence[float | None]


@dataclass(frozen=True, kw_only=True)
class Panel:
    """One axes: its title, y label and curves (a legend is drawn when it has more than one curve)."""

    title: str
    ylabel: str
    curves: Sequence[Curve]


def require_matplotlib() -> ModuleType:
    """Import matplotlib or raise the :class:`DlnestError` that says how to install it.

    Imported by name (not an import statement) so that type checking does not depend on the optional
    extra being installed; callers call this *before* doing other work, so a missing extra fails first.
    """
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        raise DlnestError(MISSING_MATPLOTLIB) from None


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: one column up to 2 panels' worth of width, then 2, then 3."""
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    return math.ceil(n / cols), cols


def save_panels(path: Path, panels: Sequence[Panel], *, title: str) -> Path:
    """Draw ``panels`` (against epoch, one axes each) into ``path`` and return it, resolved.

    The format follows the file's suffix (``.png`` when it has none); an unknown suffix or a missing
    folder is a :class:`DlnestError`. Raises the install hint when matplotlib is missing.
    """
    require_matplotlib()
    figure_mod: Any = importlib.import_module("matplotlib.figure")
    agg: Any = importlib.import_module("matplotlib.backends.backend_agg")
    ticker: Any = importlib.import_module("matplotlib.ticker")

    out = Path(path).expanduser().resolve()
    if not out.parent.is_dir():
        raise DlnestError(f"cannot write the plot {out}: folder {out.parent} does not exist")
    if not panels:
        raise DlnestError("nothing to plot")
    fmt = out.suffix.lstrip(".").lower() or "png"

    fig = figure_mod.Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    canvas = agg.FigureCanvasAgg(fig)
    supported = canvas.get_supported_filetypes()
    if fmt not in supported:
        raise DlnestError(f"cannot write a .{fmt} plot; use one of: {', '.join(sorted(supported))}")
    rows, cols = _grid(len(panels))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, panel in zip(flat, panels, strict=False):
        for curve in panel.curves:
            ys = [math.nan if v is None else float(v) for v in curve.y]
            # markers: a one-epoch run is a single point, which a line alone would not show
            ax.plot(list(curve.x), ys, marker="o", markersize=3, label=curve.label)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if len(panel.curves) > 1:
            ax.legend(fontsize=8)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    try:
        fig.savefig(out, format=fmt, dpi=DPI)
    except OSError as e:
        raise DlnestError(f"cannot write the plot {out}: {e.strerror or e}") from None
    return out
