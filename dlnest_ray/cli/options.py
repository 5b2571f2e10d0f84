"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DescOpt", "EnvOpt", "FreqOpt", "NameByDescOpt", "NoEnvOpt", "NoSaveOpt"]

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
