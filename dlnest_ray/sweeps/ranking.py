"""Ranking a sweep's trials by one metric, for ``compare S_0001`` (pure: plain values in, rows out).

Each trial is ranked by its *best* value of the metric over its epochs (the largest when the goal is
``max``, the smallest for ``min``; NaN and missing values skipped), best first; ties keep trial order.
Trials without any value (not started, or no epoch recorded it) come last, unranked. The goal is the
stop rule's when the sweep has one for that metric, else ``compare``'s naming rule
(:func:`dlnest_ray.savepack.compare.metric_goal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["RankedTrial", "TrialData", "rank_trials"]

Goal = Literal["max", "min"]


@dataclass(frozen=True, kw_only=True)
class TrialData:
    """What ranking needs of one trial: its id, values, label, package, status (and why it was stopped),
    and its metric's ``(epoch, value)`` points in epoch order (epochs from 0)."""

    task_id: str
    values: Mapping[str, Any]
    label: str = ""
    package: str = ""
    status: str = ""
    stop_reason: str = ""
    points: Sequence[tuple[int, float | None]] = field(default_factory=tuple)


@dataclass(frozen=True, kw_only=True)
class RankedTrial:
    """One row of the ranking: ``rank`` from 1 (None: no value to rank by), the best value and its
    first epoch, the last recorded value, and the epochs the metrics file holds."""

    trial: TrialData
    rank: int | None
    best: float | None
    best_epoch: int | None
    final: float | None
    epochs: int


def _summary(
    points: Sequence[tuple[int, float | None]], goal: Goal
) -> tuple[float | None, int | None, float | None]:
    best: float | None = None
    best_epoch: int | None = None
    final: float | None = None
    for epoch, value in points:
        if value is None:
            continue
        final = value
        if math.isnan(value):
            continue
        if best is None or (value > best if goal == "max" else value < best):
            best, best_epoch = value, epoch
    return best, best_epoch, final


def rank_trials(trials: Sequence[TrialData], goal: Goal) -> list[RankedTrial]:
    """The trials ranked best first by their best value (module doc); unranked ones last, in order."""
    rows = []
    for t in trials:
        best, best_epoch, final = _summary(t.points, goal)
        epochs = max((e for e, _ in t.points), default=-1) + 1
        rows.append(
            RankedTrial(trial=t, rank=None, best=best, best_epoch=best_epoch, final=final, epochs=epochs)
        )
    sign = -1.0 if goal == "max" else 1.0
    ranked = sorted((r for r in rows if r.best is not None), key=lambda r: sign * (r.best or 0.0))
    unranked = [r for r in rows if r.best is None]
    return [replace(r, rank=i + 1) for i, r in enumerate(ranked)] + unranked
