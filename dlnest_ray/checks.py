"""Checks of the whole numbers a user gives on the command line or in a config (priority, retries).

A leaf module (no imports but :mod:`.errors`): the CLI checks its options before any connection, and the
center checks the same values again from its other callers, with the same one-line errors.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import DlnestError

__all__ = ["checked_priority", "checked_retries"]


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
