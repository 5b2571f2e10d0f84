"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import DlnestError

__all__ = [
    "MEMORY_HELP",
    "AddressOpt",
    "DescOpt",
    "EnvOpt",
    "FreqOpt",
    "HomeOpt",
    "JsonOpt",
    "NameByDescOpt",
    "NoEnvOpt",
    "NoSaveOpt",
    "parse_memory",
]

FreqOpt = Annotated[Path | None, typer.Option("--freq", "-f", help="A tuning config merged last.")]
DescOpt = Annotated[str, typer.Option("--desc", "-d", help="Description recorded in the package.")]
NoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Name the package NOSAVE_<time> (never deleted).")]
NameByDescOpt = Annotated[bool, typer.Option("--name-by-desc", help="Use --desc as the package folder name.")]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        metavar="NAME=VALUE",
        help="Set a variable for the run (repeatable); it gets this shell's environment besides.",
    ),
]
NoEnvOpt = Annotated[
    bool,
    typer.Option("--no-env", help="Do not pass this shell's environment to the run (only --env values)."),
]

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="HOST:PORT",
        help="The Ray cluster (default: $RAY_ADDRESS, else the head `up` started, else the last ray start).",
    ),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="The center's state folder (default: $DLNEST_RAY_HOME, else ~/.dlnest_ray).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

MEMORY_HELP = (
    "GPU memory the run needs in all (split evenly over its GPUs): MB, or `auto` (the default). "
    "auto: the largest peak measured by earlier runs of the same model code and config, × the margin "
    "(`config --margin`); 90% of a GPU when there is nothing to learn from; lowered to the measured "
    "peak × the margin after the first epoch. MB: kept as given for the whole run, and a cap: the run "
    "gets out-of-memory beyond it."
)


def parse_memory(value: str | int | None) -> int | None:
    """``--memory``: a positive whole number of MB, or ``auto`` (any case) / no option: ``None``, which
    asks dlnest-ray to choose (learned estimate, right-sized after the first epoch). Anything else (0,
    negative, not a whole number) raises :class:`DlnestError` with one line naming it."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() == "auto":
        return None
    try:
        mb = int(text)
    except ValueError:
        raise DlnestError(
            f"--memory {text!r} is not a number of MB: give a whole number of MB (e.g. 6000) or auto"
        ) from None
    if mb <= 0:
        raise DlnestError(f"--memory must be a positive number of MB or auto (got {mb})")
    return mb


PriorityOpt = Annotated[
    str | None,  # checked by checked_priority: a bad value is one error line (exit 1), not a usage error
    typer.Option(
        "--priority",
        metavar="P",
        help="Priority (an integer, default 0): higher runs first and, when it fits nowhere, may preempt "
        "runs of lower priority (they stop at the end of an epoch, after a checkpoint, and resume later).",
        show_default=False,
    ),
]
NoPreemptOpt = Annotated[
    bool, typer.Option("--no-preempt", help="Never preempt this run for one of higher priority.")
]
