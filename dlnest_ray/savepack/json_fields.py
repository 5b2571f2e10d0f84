"""The JSON side of the manifest records (:mod:`.records`): type checks, the split of a JSON object into
typed values, kept extras and recorded nulls, and its way back. Pure.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import PackageError

__all__ = [
    "Check",
    "checkpoint_id",
    "checkpoint_ids",
    "emit",
    "is_dict",
    "is_dicts",
    "is_int",
    "is_num",
    "is_str",
    "is_strs",
    "split_known",
]

log = logging.getLogger(__name__)

Check = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def is_strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def is_dicts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


def split_known(
    raw: Mapping[str, Any], spec: Mapping[str, Check], tuples: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, Any], frozenset[str]]:
    """(typed values, extra, nulls) of ``raw``: known keys of the right type, everything else as it was,
    known keys that were ``null``. Lists of the fields named in ``tuples`` become tuples."""
    as_tuple = set(tuples)
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    nulls: set[str] = set()
    for key, value in raw.items():
        check = spec.get(key)
        if check is None:
            extra[key] = copy.deepcopy(value)
        elif value is None:
            nulls.add(key)
        elif check(value):
            known[key] = tuple(value) if key in as_tuple else copy.deepcopy(value)
        else:  # kept as it was: the typed field reads None, and the value is written back unchanged
            log.debug("manifest key %r has an unexpected value %r; kept as it is", key, value)
            extra[key] = copy.deepcopy(value)
    return known, extra, frozenset(nulls)


def emit(
    values: Mapping[str, Any], extra: Mapping[str, Any], nulls: frozenset[str], always: Iterable[str] = ()
) -> dict[str, Any]:
    """JSON of a record: ``extra``, then each typed value that is set, or ``null`` where the source had
    ``null`` (or the key is one of ``always``, unless ``extra`` keeps an odd value under it)."""
    out = copy.deepcopy(dict(extra))
    written_null = set(nulls) | {k for k in always if k not in extra}
    for key, value in values.items():
        if value is not None:
            out[key] = copy.deepcopy(list(value) if isinstance(value, tuple) else value)
        elif key in written_null:
            out[key] = None
    return out


def checkpoint_id(value: Any, key: str) -> int:
    """``value`` (an int, or a JSON object key) as a checkpoint id; a :class:`PackageError` naming the
    manifest's ``key`` when it is not one (negative, fractional, a bool, not a number)."""
    try:
        ckpt_id = int(value)
    except (TypeError, ValueError):
        ckpt_id = -1
    if ckpt_id < 0 or isinstance(value, bool | float):
        raise PackageError(f"the manifest's {key} holds {value!r}, which is not a checkpoint id")
    return ckpt_id


def checkpoint_ids(raw: Mapping[str, Any], key: str) -> tuple[int, ...]:
    """The checkpoint ids listed under ``raw[key]`` (none when absent), each read by :func:`checkpoint_id`."""
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise PackageError(f"the manifest's {key} is not a list of checkpoint ids: {value!r}")
    return tuple(checkpoint_id(v, key) for v in value)
