"""Sweep search spaces: ``KEY=SPEC`` items and sweep files in, trial assignments out (pure).

SPEC grammar, one per dotted config key (in the spirit of Hydra's multirun and Guild):

* ``a,b,c``: choices, split on top-level commas (a comma inside ``[..]``, ``{..}``, ``(..)`` or a
  ``"..."`` string does not split). A value that looks like a number is one (``1``, ``.5``, ``1e-4``);
  else it is JSON when it parses (``true``, ``null``, ``"a,b"``, ``[1,2]``); else the bare string
  (``adam``). One value is a one-choice dimension. A value that looks like a call must be quoted.
* ``range(stop)``, ``range(start,stop[,step])``: Python's range (stop exclusive, negative steps count
  down) extended to floats, computed in decimal so ``range(0,1,0.1)`` holds ``0.3``; ints only when all
  three numbers are ints.
* ``uniform(a,b)`` (a < b) and ``loguniform(a,b)`` (0 < a < b) give floats; ``randint(a,b)`` gives ints
  with *both* ends inclusive, like :func:`random.randint`.

:func:`expand` turns a :class:`SweepSpec` into trials:

* only choices and ranges, no trial count: the grid, the cartesian product in key order with the last key
  varying fastest;
* only choices and ranges with ``trials=N``: N distinct grid points drawn with the seed, listed in grid
  order (N above the grid's size is an error: drop the trial count to run the whole grid);
* any random spec: the trial count is required; N independent draws from ``random.Random(seed)``, keys
  drawn in order, choices and ranges uniformly. Draws may repeat when every random spec is a randint.

Drawing needs a seed and :func:`expand` never invents one: the CLI picks one when ``--seed`` is absent
and records it (:meth:`SweepSpec.to_dict`) so the same trials can be made again. More than
:data:`MAX_TRIALS` trials is an error. Values are plain JSON types.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeAlias

from ..errors import DlnestError

__all__ = [
    "MAX_TRIALS",
    "Choices",
    "Dimension",
    "LogUniform",
    "RandInt",
    "Range",
    "SweepError",
    "SweepSpec",
    "Uniform",
    "apply",
    "check_keys",
    "expand",
    "load_sweep_file",
    "merge_cli",
    "parse_assignments",
    "parse_spec",
    "spec_from_dict",
    "trial_label",
    "varying_keys",
]

MAX_TRIALS = 10_000
FILE_KEYS = ("space", "trials", "seed", "stop", "name", "new_keys")

Number: TypeAlias = int | float
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\((.*)\)", re.S)
_FUNCTIONS = ("range", "uniform", "loguniform", "randint")


class SweepError(DlnestError):
    """A sweep space, sweep file, trial count or stop rule is malformed; nothing was created."""


def _canon(value: Any) -> str:
    """Compact JSON of ``value``, keys sorted: equal text, equal value (``1``, ``1.0``, ``true`` differ)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        raise SweepError(f"value {value!r} is not plain JSON (numbers, strings, booleans, lists)") from None


def _num(x: Number) -> str:
    return json.dumps(x)


def _check_numbers(spec: str, *numbers: object, ints: bool = False) -> None:
    for n in numbers:
        kind = int if ints else (int, float)
        if isinstance(n, bool) or not isinstance(n, kind) or not math.isfinite(n):
            what = "integers" if ints else "finite numbers"
            raise SweepError(f"{spec} needs {what}, got {n!r}")


def _dec(x: Number) -> Decimal:
    return Decimal(x) if isinstance(x, int) else Decimal(repr(x))  # repr: 0.1 is 0.1, not its binary value


@dataclass(frozen=True)
class Choices:
    """Values tried in turn (grid) or drawn uniformly (random sweep): at least one, none twice."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise SweepError("no values to choose from; give at least one")
        seen: set[str] = set()
        for v in self.values:
            text = _canon(v)
            if text in seen:
                raise SweepError(f"value {text} is given twice in {self.describe()}; give it once")
            seen.add(text)

    is_random = False

    @property
    def size(self) -> int:
        return len(self.values)

    def value_at(self, i: int) -> Any:
        return copy.deepcopy(self.values[i])  # trials never share a list

    def sample(self, rng: random.Random) -> Any:
        return self.value_at(rng.randrange(self.size))

    def describe(self) -> str:
        """The spec text: :func:`parse_spec` of it gives an equal dimension."""
        return ",".join(_format_choice(v) for v in self.values)


@dataclass(frozen=True)
class Range:
    """Python's ``range(start, stop, step)`` over numbers (stop exclusive); must hold one value at least."""

    start: Number
    stop: Number
    step: Number = 1

    def __post_init__(self) -> None:
        _check_numbers(self.describe(), self.start, self.stop, self.step)
        if self.step == 0:
            raise SweepError(f"{self.describe()} has step 0; give a positive or negative step")
        if self.size == 0:
            raise SweepError(
                f"{self.describe()} is empty (stop is exclusive, as in Python's range); "
                "give start < stop, or a negative step to count down"
            )

    is_random = False

    @property
    def is_integer(self) -> bool:
        return all(isinstance(n, int) for n in (self.start, self.stop, self.step))

    @property
    def size(self) -> int:
        count = (_dec(self.stop) - _dec(self.start)) / _dec(self.step)
        return max(0, int(count.to_integral_value(rounding=ROUND_CEILING)))

    def value_at(self, i: int) -> Number:
        value = _dec(self.start) + i * _dec(self.step)
        return int(value) if self.is_integer else float(value)

    def sample(self, rng: random.Random) -> Number:
        return self.value_at(rng.randrange(self.size))

    def describe(self) -> str:
        step = "" if self.step == 1 and isinstance(self.step, int) else f",{_num(self.step)}"
        return f"range({_num(self.start)},{_num(self.stop)}{step})"


@dataclass(frozen=True)
class Uniform:
    """Floats drawn uniformly from [low, high]; low < high."""

    low: Number
    high: Number

    def __post_init__(self) -> None:
        _check_numbers(self.describe(), self.low, self.high)
        if not self.low < self.high:
            raise SweepError(f"{self.describe()} needs low < high")

    is_random = True

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(float(self.low), float(self.high))

    def describe(self) -> str:
        return f"uniform({_num(self.low)},{_num(self.high)})"


@dataclass(frozen=True)
class LogUniform:
    """Floats whose logarithm is uniform over [log low, log high]; 0 < low < high."""

    low: Number
    high: Number

    def __post_init__(self) -> None:
        _check_numbers(self.describe(), self.low, self.high)
        if not 0 < self.low < self.high:
            raise SweepError(f"{self.describe()} needs 0 < low < high (there is no log of 0 or less)")

    is_random = True

    def sample(self, rng: random.Random) -> float:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return min(max(value, float(self.low)), float(self.high))  # exp(log(x)) may miss x by an ulp

    def describe(self) -> str:
        return f"loguniform({_num(self.low)},{_num(self.high)})"


@dataclass(frozen=True)
class RandInt:
    """Ints drawn uniformly from low to high, both inclusive (as :func:`random.randint`); low <= high."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _check_numbers(self.describe(), self.low, self.high, ints=True)
        if self.low > self.high:
            raise SweepError(f"{self.describe()} needs low <= high (both ends are included)")

    is_random = True

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def describe(self) -> str:
        return f"randint({self.low},{self.high})"


Dimension: TypeAlias = Choices | Range | Uniform | LogUniform | RandInt


def _format_choice(value: Any) -> str:
    """A bare string when it reads back as the same string, else JSON."""
    if (
        isinstance(value, str)
        and value
        and value == value.strip()
        and not any(c in value for c in ',"[]{}()')
        and not _NUMBER.fullmatch(value)
        and value not in ("true", "false", "null", "NaN", "Infinity", "-Infinity")
    ):
        return value
    return _canon(value)


def _reject_constant(name: str) -> Any:
    raise SweepError(f"{name} is not a JSON value; quote it to mean the string")


def _split_top(text: str) -> list[str]:
    """``text`` split on commas outside brackets, parentheses and double-quoted strings, stripped."""
    pieces: list[str] = []
    depth, start, in_string, escaped = 0, 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise SweepError(f"unbalanced {ch!r} in {text!r}")
        elif ch == "," and depth == 0:
            pieces.append(text[start:i].strip())
            start = i + 1
    if in_string:
        raise SweepError(f"unterminated string in {text!r}; close the double quote")
    if depth:
        raise SweepError(f"unclosed bracket in {text!r}")
    pieces.append(text[start:].strip())
    return pieces


def _parse_number(piece: str) -> Number | None:
    if not _NUMBER.fullmatch(piece):
        return None
    if _INT.fullmatch(piece):
        return int(piece)
    value = float(piece)
    if not math.isfinite(value):
        raise SweepError(f"number {piece} is too large")
    return value


def _parse_value(piece: str, whole: str) -> Any:
    if not piece:
        raise SweepError(f"empty value in {whole!r}; remove the extra comma")
    number = _parse_number(piece)
    if number is not None:
        return number
    try:
        return json.loads(piece, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        if piece[0] in '"[{':
            raise SweepError(f"value {piece!r} is not valid JSON") from None
    if _CALL.fullmatch(piece):
        raise SweepError(
            f"{piece!r} looks like a call but is not one of {', '.join(_FUNCTIONS)}; "
            "quote it to mean the string"
        )
    return piece


def _parse_call(name: str, args_text: str, whole: str) -> Dimension:
    args = [a.strip() for a in args_text.split(",")]
    numbers = [_parse_number(a) for a in args]
    counts = (1, 2, 3) if name == "range" else (2,)
    if len(args) not in counts or any(n is None for n in numbers):
        form = "range([start,]stop[,step])" if name == "range" else f"{name}(low,high)"
        raise SweepError(f"{whole!r} is not {form} with plain numbers")
    nums = [n for n in numbers if n is not None]
    if name == "range":
        return Range(0, nums[0]) if len(nums) == 1 else Range(*nums)
    if name == "uniform":
        return Uniform(nums[0], nums[1])
    if name == "loguniform":
        return LogUniform(nums[0], nums[1])
    low, high = nums
    if not (isinstance(low, int) and isinstance(high, int)):
        raise SweepError(f"{whole!r} needs integers (randint draws ints, both ends included)")
    return RandInt(low, high)


def parse_spec(key: str, text: str) -> Dimension:
    """The dimension ``text`` describes (grammar in the module docstring); errors name ``key``."""
    try:
        whole = text.strip()
        if not whole:
            raise SweepError("no values given; write KEY=a,b,c or KEY=range(...) or KEY=uniform(a,b)")
        call = _CALL.fullmatch(whole)
        if call and call.group(1) in _FUNCTIONS:
            return _parse_call(call.group(1), call.group(2), whole)
        return Choices(tuple(_parse_value(p, whole) for p in _split_top(whole)))
    except SweepError as e:
        raise SweepError(f"sweep key '{key}': {e}") from None


def _check_key(key: str) -> None:
    parts = key.split(".")
    if not key or any(not p or p != p.strip() for p in parts):
        raise SweepError(f"sweep key {key!r} is not a dotted config key like model_config.lr")


def parse_assignments(items: Sequence[str]) -> dict[str, Dimension]:
    """``KEY=SPEC`` items, in order, as dimensions; no ``=``, a bad key or a key given twice is an error."""
    out: dict[str, Dimension] = {}
    for item in items:
        key, eq, spec = item.partition("=")
        key = key.strip()
        if not eq:
            raise SweepError(f"sweep item {item!r} has no '='; write KEY=SPEC, e.g. model_config.lr=0.1,0.01")
        _check_key(key)
        if key in out:
            raise SweepError(f"sweep key '{key}' is given twice; give it once with all its values (a,b,c)")
        out[key] = parse_spec(key, spec)
    return out


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep: the space (key order kept; treat it as read-only), the trial count, the seed, the
    stop rule text (checked by :func:`dlnest_ray.sweeps.stopping.parse_rule`, not here), a name, and
    whether keys absent from the config may be added. Construction checks everything else."""

    space: Mapping[str, Dimension]
    trials: int | None = None
    seed: int | None = None
    stop: str | None = None
    name: str | None = None
    new_keys: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", dict(self.space))
        if not self.space:
            raise SweepError('empty sweep: give at least one KEY=SPEC (or a non-empty "space" in the file)')
        for key in self.space:
            _check_key(key)
            parts = key.split(".")
            for outer in (".".join(parts[:n]) for n in range(1, len(parts))):
                if outer in self.space:
                    raise SweepError(f"sweep keys '{outer}' and '{key}' overlap; sweep one of them")
        for label, n in (("trial count", self.trials), ("seed", self.seed)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
                raise SweepError(f"the {label} must be an integer, got {n!r}")
        if self.trials is not None and not 1 <= self.trials <= MAX_TRIALS:
            raise SweepError(f"the trial count must be from 1 to {MAX_TRIALS}, got {self.trials}")

    @property
    def is_random(self) -> bool:
        """Whether some dimension is random (uniform, loguniform, randint), so a trial count is needed."""
        return any(d.is_random for d in self.space.values())

    @property
    def samples(self) -> bool:
        """Whether :func:`expand` draws trials, and so needs :attr:`seed`."""
        return self.is_random or self.trials is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :func:`load_sweep_file` reads back into an equal spec."""
        space = {k: list(d.values) if isinstance(d, Choices) else d.describe() for k, d in self.space.items()}
        return {
            "space": space,
            "trials": self.trials,
            "seed": self.seed,
            "stop": self.stop,
            "name": self.name,
            "new_keys": self.new_keys,
        }


def _file_dimension(key: str, value: Any) -> Dimension:
    if isinstance(value, str):
        return parse_spec(key, value)
    if isinstance(value, list):
        try:
            return Choices(tuple(value))
        except SweepError as e:
            raise SweepError(f"sweep key '{key}': {e}") from None
    if value is None or isinstance(value, bool | int | float):
        return Choices((value,))
    raise SweepError(f"sweep key '{key}': give a SPEC string or a list of values, not an object")


def load_sweep_file(text: str, *, source: str) -> SweepSpec:
    """The :class:`SweepSpec` in the JSON ``text`` of a sweep file; errors start with ``source``.

    The object holds ``space`` (key → SPEC string, list of choices, or one scalar value) and optionally
    ``trials``, ``seed``, ``stop``, ``name`` (each may be null) and ``new_keys``; other keys are errors.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise SweepError(f"{source}:{e.lineno}:{e.colno}: malformed JSON ({e.msg}); fix the file") from None
    except SweepError as e:
        raise SweepError(f"{source}: {e}") from None
    return spec_from_dict(data, source=source)


def spec_from_dict(data: Any, *, source: str) -> SweepSpec:
    """The :class:`SweepSpec` a sweep file's object (already parsed: :meth:`SweepSpec.to_dict`'s form, or
    what a Python caller passes) describes; errors start with ``source``."""
    try:
        if not isinstance(data, dict):
            raise SweepError(f"a sweep file holds a JSON object, not {type(data).__name__}")
        unknown = [k for k in data if k not in FILE_KEYS]
        if unknown:
            raise SweepError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; a sweep file holds {', '.join(FILE_KEYS)}"
            )
        space = data.get("space")
        if not isinstance(space, dict):
            raise SweepError('"space" must be an object of KEY: SPEC or KEY: [values]')
        for key in ("stop", "name"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise SweepError(f'"{key}" must be a string')
        if not isinstance(data.get("new_keys", False), bool):
            raise SweepError('"new_keys" must be true or false')
        return SweepSpec(
            space={k: _file_dimension(k, v) for k, v in space.items()},
            trials=data.get("trials"),
            seed=data.get("seed"),
            stop=data.get("stop"),
            name=data.get("name"),
            new_keys=data.get("new_keys", False),
        )
    except SweepError as e:
        raise SweepError(f"{source}: {e}") from None


def merge_cli(
    file_spec: SweepSpec | None,
    cli_space: Mapping[str, Dimension],
    *,
    trials: int | None = None,
    seed: int | None = None,
    stop: str | None = None,
    name: str | None = None,
    new_keys: bool = False,
    source: str = "the sweep file",
) -> SweepSpec:
    """The sweep file's spec with the command line's on top: file keys first, then the CLI's (a key in
    both is an error); each option given (not None) replaces the file's; ``new_keys`` if either says so."""
    if file_spec is None:
        return SweepSpec(space=cli_space, trials=trials, seed=seed, stop=stop, name=name, new_keys=new_keys)
    twice = [k for k in cli_space if k in file_spec.space]
    if twice:
        raise SweepError(
            f"sweep key(s) {', '.join(twice)} given both in {source} and on the command line; give each once"
        )
    return SweepSpec(
        space={**file_spec.space, **cli_space},
        trials=file_spec.trials if trials is None else trials,
        seed=file_spec.seed if seed is None else seed,
        stop=file_spec.stop if stop is None else stop,
        name=file_spec.name if name is None else name,
        new_keys=new_keys or file_spec.new_keys,
    )


def _rng(spec: SweepSpec) -> random.Random:
    if spec.seed is None:
        # a caller bug, not a user error: a sweep without a recorded seed could never be made again
        raise ValueError("this sweep draws trials: pick a seed, record it, and set SweepSpec.seed")
    return random.Random(spec.seed)


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """The trials of ``spec``, each a ``{key: value}`` in key order (rules in the module docstring).

    Raises :class:`SweepError` for a random space without a trial count, a grid over :data:`MAX_TRIALS`,
    or more trials than grid points; ``ValueError`` when trials are drawn and ``spec.seed`` is None.
    """
    dims = list(spec.space.items())
    if spec.is_random:
        if spec.trials is None:
            k, d = next((k, d) for k, d in dims if d.is_random)
            raise SweepError(f"random specs ({k}={d.describe()}) need a trial count: add --trials N")
        rng = _rng(spec)
        return [{k: d.sample(rng) for k, d in dims} for _ in range(spec.trials)]
    grid = [(k, d) for k, d in dims if isinstance(d, Choices | Range)]
    sizes = [d.size for _, d in grid]
    total = math.prod(sizes)
    if spec.trials is None:
        if total > MAX_TRIALS:
            raise SweepError(
                f"the grid has {total} points, more than {MAX_TRIALS}; narrow it or add --trials N to draw N"
            )
        indices: Iterable[int] = range(total)
    else:
        if spec.trials > total:
            raise SweepError(
                f"{spec.trials} trials asked but the grid has only {total} points; "
                "drop --trials to run the whole grid"
            )
        indices = sorted(_rng(spec).sample(range(total), spec.trials))
    out = []
    for index in indices:
        point: dict[str, Any] = {}
        for (key, dim), size in zip(reversed(grid), reversed(sizes), strict=True):
            index, i = divmod(index, size)  # mixed radix: the last key varies fastest
            point[key] = dim.value_at(i)
        out.append({k: point[k] for k, _ in grid})
    return out


def _not_a_dict(key: str, parent: str, node: Any) -> SweepError:
    return SweepError(
        f"sweep key '{key}': '{parent}' holds {_short_value(node, 24)} ({type(node).__name__}) in the "
        "config, not a dict, so it has no keys to set"
    )


def check_keys(keys: Iterable[str], config: Mapping[str, Any], *, new_keys: bool) -> None:
    """Raise unless every dotted key exists in ``config`` (nested dicts), or ``new_keys`` allows adding
    it. A key below a value that is not a dict is an error either way."""
    missing = []
    for key in keys:
        node: Any = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, Mapping):
                raise _not_a_dict(key, ".".join(parts[:depth]), node)
            if part not in node:
                missing.append(key)
                break
            node = node[part]
    if missing and not new_keys:
        raise SweepError(
            f"sweep key(s) not in the config: {', '.join(missing)}; "
            "check the spelling, or pass --new-keys to add them"
        )


def apply(config: Mapping[str, Any], assignment: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with each dotted key of ``assignment`` set (missing dicts are created);
    the inputs are untouched. A key below a value that is not a dict is an error."""
    out = copy.deepcopy(dict(config))
    for key, value in assignment.items():
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _not_a_dict(key, ".".join(parts[: depth + 1]), child)
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out


def varying_keys(assignments: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys, in first-seen order, whose value is not the same in every trial (absent counts as a value)."""
    keys = list(dict.fromkeys(k for a in assignments for k in a))
    return [k for k in keys if len({_canon(a[k]) if k in a else None for a in assignments}) > 1]


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each key's shortest dotted suffix that no other key shares (``model.lr``/``optim.lr`` stay apart)."""
    depth = dict.fromkeys(keys, 1)
    while True:
        names = {k: ".".join(k.split(".")[-depth[k] :]) for k in keys}
        taken = list(names.values())
        clash = [k for k in keys if taken.count(names[k]) > 1 and depth[k] < k.count(".") + 1]
        if not clash:
            return names
        for k in clash:
            depth[k] += 1


def _short_value(value: Any, width: int) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        text = _canon(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def trial_label(assignment: Mapping[str, Any], keys: Sequence[str] | None = None, *, width: int = 24) -> str:
    """Short text for a trial, ``lr=0.01 opt=adam``: each key (all, or ``keys`` in that order) by its
    last dotted part (more parts when two keys would read the same), floats to 4 significant digits,
    each value cut to ``width`` characters."""
    shown = list(assignment) if keys is None else [k for k in keys if k in assignment]
    names = _short_names(shown)
    return " ".join(f"{names[k]}={_short_value(assignment[k], width)}" for k in shown)
