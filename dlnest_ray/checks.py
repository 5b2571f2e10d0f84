"""Checks of the whole numbers a user gives on the command line or in a config (priority, retries, nice).

A leaf module (no imports but :mod:`.errors`): the CLI checks its options before any connection, and the
center checks the same values again from its other callers, with the same one-line errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import DlnestError

__all__ = ["DEFAULT_NICE", "NICE_KEY", "checked_nice", "checked_priority", "checked_retries", "config_nice"]

NICE_KEY = "nice"  # the run config's key: the niceness of the run's rank processes
DEFAULT_NICE = 10  # ranks yield the CPUs to what people type (the CLI, the shell, analyzers)


def checked_priority(value: Any, what: str = "--priority") -> int:
    """``value`` as a priority (any whole number; a string of digits too), else a DlnestError naming
    ``what`` and the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        return int(value)
    raise DlnestError(f"{what} {value!r} is not an integer: give a whole number (higher runs first)")


def checked_retries(value: Any, what: str = "--retries") -> int:
    """``value`` as a number of retries (a whole number >= 0; a string of digits too), else a
    DlnestError with one line naming ``what`` and the value."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        number = int(value)
    if number is None:
        raise DlnestError(f"{what} {value!r} is not a number: give a whole number of retries (e.g. 2)")
    if number < 0:
        raise DlnestError(f"{what} must be 0 or more (got {number})")
    return number


def checked_nice(value: Any, what: str = f"config key {NICE_KEY}") -> int:
    """``value`` as the niceness of a run's ranks: a whole number from 0 (the usual priority) to 19
    (the lowest), else a DlnestError naming ``what`` and the value."""
    scale = "0 (the usual priority) to 19 (the lowest)"
    if not isinstance(value, int) or isinstance(value, bool):
        raise DlnestError(f"{what} {value!r} is not a whole number: give {scale}")
    if not 0 <= value <= 19:
        raise DlnestError(f"{what} must be from {scale}, got {value}")
    return value


def config_nice(args: Mapping[str, Any]) -> int:
    """The niceness a run's config asks for (``nice``), checked; :data:`DEFAULT_NICE` without the key."""
    return checked_nice(args.get(NICE_KEY, DEFAULT_NICE))
