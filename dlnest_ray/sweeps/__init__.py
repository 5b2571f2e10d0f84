"""Sweeps (pure core): search spaces expanded into trials, and early-stopping rules over their metrics.

:mod:`.space` parses ``KEY=SPEC`` items and sweep files and expands them into trial assignments;
:mod:`.stopping` decides which running trials a median or ASHA rule stops at an epoch boundary.
"""

from .space import (
    MAX_TRIALS,
    Choices,
    Dimension,
    LogUniform,
    RandInt,
    Range,
    SweepError,
    SweepSpec,
    Uniform,
    apply,
    check_keys,
    expand,
    load_sweep_file,
    merge_cli,
    parse_assignments,
    parse_spec,
    spec_from_dict,
    trial_label,
    varying_keys,
)
from .stopping import (
    AshaRule,
    MedianRule,
    StopDecision,
    StopRule,
    TrialCurve,
    decide_stops,
    goal,
    parse_rule,
)

__all__ = [
    "MAX_TRIALS",
    "AshaRule",
    "Choices",
    "Dimension",
    "LogUniform",
    "MedianRule",
    "RandInt",
    "Range",
    "StopDecision",
    "StopRule",
    "SweepError",
    "SweepSpec",
    "TrialCurve",
    "Uniform",
    "apply",
    "check_keys",
    "decide_stops",
    "expand",
    "goal",
    "load_sweep_file",
    "merge_cli",
    "parse_assignments",
    "parse_rule",
    "parse_spec",
    "spec_from_dict",
    "trial_label",
    "varying_keys",
]
