"""A sweep checked against its config and expanded into trials, before anything is created (pure).

:func:`plan_sweep` is what both the CLI (to fail in one line before it connects) and the center (the
authority: a Python caller reaches it directly) run: the seed is chosen when trials are drawn and none was
given (and recorded in the plan's spec, so the same trials can be made again), the trials are expanded,
every key is checked against the merged config (``new_keys`` allows adding keys), the stop rule is parsed,
and each trial gets a short label of the values that vary between trials.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .space import SweepError, SweepSpec, apply, check_keys, expand, spec_from_dict, trial_label, varying_keys
from .stopping import StopRule, parse_rule

__all__ = ["RESERVED_KEYS", "SweepPlan", "plan_sweep", "spec_from_request"]

# keys dlnest-ray rewrites when it makes a package: a sweep cannot set them
RESERVED_KEYS = ("root_file_path", "save_root", "child_jsons")


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """A checked sweep: its spec (with the seed used), its stop rule (None: no early stopping), each
    trial's values (dotted key → value, key order kept) and label, and the keys that vary."""

    spec: SweepSpec
    rule: StopRule | None
    assignments: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]
    varying: tuple[str, ...]

    def config_of(self, config: Mapping[str, Any], index: int) -> dict[str, Any]:
        """The merged ``config`` with trial ``index``'s values laid over it (a copy)."""
        return apply(config, self.assignments[index])


def spec_from_request(
    space: Mapping[str, Any],
    *,
    trials: int | None = None,
    seed: int | None = None,
    stop: str | None = None,
    name: str | None = None,
    new_keys: bool = False,
    source: str = "the sweep",
) -> SweepSpec:
    """The spec a caller asks for: ``space`` maps each dotted key to a SPEC string (``"0.1,0.01"``,
    ``"loguniform(1e-4,1e-1)"``) or a list of values, as a sweep file does; "" for ``stop``/``name`` is
    none."""
    return spec_from_dict(
        {
            "space": dict(space),
            "trials": trials,
            "seed": seed,
            "stop": stop or None,
            "name": name or None,
            "new_keys": bool(new_keys),
        },
        source=source,
    )


def plan_sweep(spec: SweepSpec, config: Mapping[str, Any]) -> SweepPlan:
    """Check ``spec`` against the merged ``config`` and expand it (module doc); SweepError in one line
    for anything wrong, before anything exists."""
    reserved = [k for k in spec.space if k.split(".")[0] in RESERVED_KEYS]
    if reserved:
        raise SweepError(
            f"sweep key(s) {', '.join(reserved)}: dlnest-ray sets {', '.join(RESERVED_KEYS)} itself; "
            "sweep other keys"
        )
    rule = parse_rule(spec.stop) if spec.stop else None
    if spec.samples and spec.seed is None:
        spec = replace(spec, seed=random.SystemRandom().randrange(2**31))
    check_keys(spec.space, config, new_keys=spec.new_keys)
    assignments = expand(spec)
    for a in assignments:  # a key below a value that is not a dict fails here, before anything exists
        apply(config, a)
    varying = varying_keys(assignments)
    shown = varying or list(spec.space)  # one trial (or one value each): show them all
    labels = tuple(trial_label(a, shown) for a in assignments)
    return SweepPlan(
        spec=spec,
        rule=rule,
        assignments=tuple(assignments),
        labels=labels,
        varying=tuple(varying),
    )
