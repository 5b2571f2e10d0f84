"""Early stopping of sweep trials: rules the center applies at epoch boundaries (pure).

Curves: epochs are numbered from 1; ``TrialCurve.values[i]`` is the trial's metric after epoch ``i + 1``
(None when that epoch logged none; NaN counts as None), so ``len(values)`` is its latest finished epoch.
Every trial counts as evidence, finished, stopped and failed ones included; only active trials (running or
pending) are judged, each at its latest finished epoch ``t``.

* ``median:METRIC:max|min[@START]`` (the median stopping rule of Google Vizier, Golovin et al. 2017, as
  in Ray Tune): from epoch START (default 1) on, stop a trial whose best value up to ``t`` is strictly
  worse than the median of the other trials' running means (the mean of their values up to ``t``).
  Comparing a best with means keeps trials that are still improving; comparing bests with bests would
  stop about half the trials every epoch. Only other trials that reached ``t`` with a value count, and
  at least :data:`MEDIAN_MIN_OTHERS` must, so that one or two early trials do not decide alone.
* ``asha:METRIC:max|min[:min=R][:eta=E][:max=T]`` (asynchronous successive halving, Li et al. 2018, one
  bracket as Ray Tune's AsyncHyperBandScheduler): rungs at epochs ``R·E^k`` (up to T when given;
  defaults R=1, E=3). A trial whose ``t`` is a rung continues only if its value there (its latest value
  up to the rung) is among the top ``floor(n/E)`` of the ``n`` values recorded at that rung, its own
  included; while fewer than E trials have reached the rung it continues. Without arrival times the rung
  holds every trial that reached it by the time of the call (a simplification of ASHA's record of
  earlier arrivals); the center calls after every epoch, so each trial is judged once at each rung.

:func:`decide_stops` is idempotent: the same curves give the same decisions. The caller stops a trial
once and keeps it from being decided again.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .space import SweepError

__all__ = [
    "MEDIAN_MIN_OTHERS",
    "AshaRule",
    "MedianRule",
    "Mode",
    "StopDecision",
    "StopRule",
    "TrialCurve",
    "decide_stops",
    "goal",
    "parse_rule",
]

MEDIAN_MIN_OTHERS = 2
Mode: TypeAlias = Literal["max", "min"]
FORMS = "median:METRIC:max|min[@START] or asha:METRIC:max|min[:min=R][:eta=E][:max=T]"


def _check_goal(metric: str, mode: str) -> None:
    if not metric or metric != metric.strip():
        raise SweepError(f"metric name {metric!r} is empty or padded with spaces")
    if mode not in ("max", "min"):
        raise SweepError(f"mode must be max or min, got {mode!r}")


@dataclass(frozen=True)
class MedianRule:
    """Median stopping on ``metric`` (higher is better when ``mode`` is max) from epoch ``start`` on."""

    metric: str
    mode: Mode
    start: int = 1
    min_others: int = MEDIAN_MIN_OTHERS

    def __post_init__(self) -> None:
        _check_goal(self.metric, self.mode)
        if self.start < 1:
            raise SweepError(f"the start epoch must be 1 or more, got {self.start}")
        if self.min_others < 1:
            raise SweepError(f"min_others must be 1 or more, got {self.min_others}")

    def describe(self) -> str:
        return f"median:{self.metric}:{self.mode}@{self.start}"


@dataclass(frozen=True)
class AshaRule:
    """Asynchronous successive halving on ``metric``: rungs at ``min_t·eta^k`` epochs, up to ``max_t``."""

    metric: str
    mode: Mode
    min_t: int = 1
    eta: int = 3
    max_t: int | None = None

    def __post_init__(self) -> None:
        _check_goal(self.metric, self.mode)
        if self.min_t < 1:
            raise SweepError(f"min must be 1 or more, got {self.min_t}")
        if self.eta < 2:
            raise SweepError(f"eta must be 2 or more, got {self.eta}")
        if self.max_t is not None and self.max_t < self.min_t:
            raise SweepError(f"max ({self.max_t}) must not be below min ({self.min_t})")

    def is_rung(self, epoch: int) -> bool:
        if epoch < self.min_t or epoch % self.min_t or (self.max_t is not None and epoch > self.max_t):
            return False
        q = epoch // self.min_t
        while q % self.eta == 0:
            q //= self.eta
        return q == 1

    def rungs(self, upto: int) -> list[int]:
        """The rung epochs up to ``upto`` (and up to ``max_t``), ascending."""
        out, r = [], self.min_t
        while r <= upto and (self.max_t is None or r <= self.max_t):
            out.append(r)
            r *= self.eta
        return out

    def describe(self) -> str:
        end = "" if self.max_t is None else f":max={self.max_t}"
        return f"asha:{self.metric}:{self.mode}:min={self.min_t}:eta={self.eta}{end}"


StopRule: TypeAlias = MedianRule | AshaRule


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SweepError(f"{what} must be an integer, got {text!r}") from None


def _parse(text: str) -> StopRule:
    kind, _, body = text.partition(":")
    if kind == "median":
        head, at, start = body.rpartition("@") if "@" in body else (body, "", "")
        parts = head.split(":")
        if len(parts) != 2:
            raise SweepError("median takes METRIC:max|min and an optional @START")
        if at and not start:
            raise SweepError("give the start epoch after '@'")
        start_epoch = _int(start, "the start epoch") if at else 1
        return MedianRule(parts[0], _mode(parts[1]), start_epoch)
    if kind == "asha":
        parts = body.split(":")
        if len(parts) < 2:
            raise SweepError("asha takes METRIC:max|min and the options min=R, eta=E, max=T")
        metric, mode, *options = parts
        values: dict[str, int] = {}
        for option in options:
            name, eq, value = option.partition("=")
            if not eq or name not in ("min", "eta", "max"):
                raise SweepError(f"unknown option {option!r}; asha takes min=R, eta=E and max=T")
            if name in values:
                raise SweepError(f"option {name} is given twice")
            values[name] = _int(value, name)
        return AshaRule(metric, _mode(mode), values.get("min", 1), values.get("eta", 3), values.get("max"))
    raise SweepError(f"unknown rule {kind!r}")


def _mode(text: str) -> Mode:
    if text == "max":
        return "max"
    if text == "min":
        return "min"
    raise SweepError(f"mode must be max or min, got {text!r}")


def parse_rule(text: str) -> StopRule:
    """The rule ``text`` gives (forms in the module docstring); errors name the rule and the forms."""
    try:
        return _parse(text.strip())
    except SweepError as e:
        raise SweepError(f"stop rule {text!r}: {e}; expected {FORMS}") from None


def goal(rule: StopRule) -> tuple[str, Mode]:
    """The metric the rule reads and whether higher (max) or lower (min) is better, as for ``compare``."""
    return rule.metric, rule.mode


@dataclass(frozen=True)
class TrialCurve:
    """One trial's metric per finished epoch (``values[0]`` is epoch 1; None: no value that epoch);
    ``active`` while it runs or waits, False once it finished, stopped or failed."""

    trial_id: str
    values: tuple[float | None, ...]
    active: bool = True


@dataclass(frozen=True)
class StopDecision:
    """Stop ``trial_id`` gracefully at its epoch boundary; ``reason`` is one line for its status."""

    trial_id: str
    reason: str


def _clean(values: Sequence[float | None], upto: int) -> list[float]:
    return [v for v in values[:upto] if v is not None and not math.isnan(v)]


def _best(values: Sequence[float | None], upto: int, mode: Mode) -> float | None:
    clean = _clean(values, upto)
    if not clean:
        return None
    return max(clean) if mode == "max" else min(clean)


def _latest(values: Sequence[float | None], upto: int) -> float | None:
    clean = _clean(values, upto)
    return clean[-1] if clean else None


def _worse(value: float, than: float, mode: Mode) -> bool:
    return value < than if mode == "max" else value > than


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _median(rule: MedianRule, curve: TrialCurve, curves: Sequence[TrialCurve]) -> str | None:
    t = len(curve.values)
    best = _best(curve.values, t, rule.mode)
    if t < rule.start or best is None:
        return None
    others = []
    for other in curves:
        if other.trial_id != curve.trial_id and len(other.values) >= t:
            clean = _clean(other.values, t)
            if clean:
                others.append(statistics.fmean(clean))
    if len(others) < rule.min_others:
        return None
    median = statistics.median(others)
    if not _worse(best, median, rule.mode):
        return None
    sign = "<" if rule.mode == "max" else ">"
    return (
        f"median stopping at epoch {t}: best {rule.metric} {_fmt(best)} {sign} median {_fmt(median)} "
        f"of {len(others)} other trials"
    )


def _asha(rule: AshaRule, curve: TrialCurve, curves: Sequence[TrialCurve]) -> str | None:
    t = len(curve.values)
    own = _latest(curve.values, t)
    if not rule.is_rung(t) or own is None:
        return None
    recorded = []
    for other in curves:
        if len(other.values) >= t:
            value = _latest(other.values, t)
            if value is not None:
                recorded.append(value)
    if len(recorded) < rule.eta:
        return None
    ranked = sorted(recorded, reverse=rule.mode == "max")
    cutoff = ranked[len(recorded) // rule.eta - 1]  # the worst value that still continues; ties continue
    if not _worse(own, cutoff, rule.mode):
        return None
    return (
        f"asha rung {t}: {rule.metric} {_fmt(own)} not in the top 1/{rule.eta} of {len(recorded)} trials "
        f"(cutoff {_fmt(cutoff)})"
    )


def _judge(rule: StopRule, curve: TrialCurve, curves: Sequence[TrialCurve]) -> str | None:
    if isinstance(rule, MedianRule):
        return _median(rule, curve, curves)
    return _asha(rule, curve, curves)


def decide_stops(rule: StopRule, curves: Sequence[TrialCurve]) -> list[StopDecision]:
    """Which active trials ``rule`` stops now, in the order of ``curves`` (trial ids must be distinct)."""
    ids = [c.trial_id for c in curves]
    if len(set(ids)) != len(ids):
        raise ValueError("decide_stops: trial ids must be distinct")
    out = []
    for curve in curves:
        if not curve.active or not curve.values:
            continue
        reason = _judge(rule, curve, curves)
        if reason is not None:
            out.append(StopDecision(curve.trial_id, reason))
    return out
