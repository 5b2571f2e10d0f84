"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "AddressOpt",
    "DescOpt",
    "EnvOpt",
    "FreqOpt",
    "HomeOpt",
    "JsonOpt",
    "NameByDescOpt",
    "NoEnvOpt",
    "NoSaveOpt",
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
