"""``dlnest-ray new``: write a project from a template."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ProjectError

__all__ = ["create_project", "new"]


def _template(name: str) -> Path:
    path = Path(str(resources.files("dlnest_ray") / "templates" / name))
    if not path.is_dir():
        raise ProjectError(
            f"project template {name!r} is missing from the installation; reinstall dlnest-ray"
        )
    return path


def create_project(target: Path, *, mnist: bool, data_root: Path | None = None) -> Path:
    """Copy a template into ``target`` (created if missing; refused when it exists and is not empty)."""
    target = target.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ProjectError(
            f"{target} already exists and is not an empty folder; choose a new or empty folder"
        )
    shutil.copytree(
        _template("mnist" if mnist else "blank"),
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Saves"),
    )
    if data_root is not None:
        cfg_path = target / "dataset_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.setdefault("dataset_config", {})["data_root"] = str(data_root.expanduser().resolve())
        cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")
    return target


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
