"""``dlnest-ray new``: write a project from a template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ProjectError
from ..project import create_project

__all__ = ["create_project", "new"]


def new(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to create (must be new or empty).")
    ],
    mnist: Annotated[
        bool, typer.Option("--mnist", help="A complete MNIST classifier instead of blank stubs.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            metavar="PATH",
            help="With --mnist: the folder holding the MNIST IDX files (written as data_root). "
            "Otherwise $DLNEST_MNIST_DIR, else a download into ~/.cache/dlnest_ray/mnist.",
        ),
    ] = None,
) -> None:
    """Create a project: model, dataset and life-cycle code, JSON configs and analysis scripts.

    The layout is DLNest's (root_config.json with child configs, Model/, Dataset/, LifeCycle.py,
    AnalyzeScripts/). Paths in the configs are relative to root_config.json, so the folder can be moved.
    """
    if data is not None and not mnist:
        raise ProjectError("--data only applies to --mnist projects")
    target = create_project(directory, mnist=mnist, data_root=data)
    kind = "MNIST" if mnist else "blank"
    typer.echo(f"Created a {kind} project in {target}")
    typer.echo(f"Next: dlnest-ray train {target / 'root_config.json'}")
