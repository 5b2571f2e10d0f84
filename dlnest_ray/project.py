"""Writing a new project from a template shipped with dlnest-ray (``blank`` or ``mnist``)."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from .config import load_json
from .errors import ProjectError

__all__ = ["create_project"]


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
        cfg = load_json(cfg_path)  # a damaged file is named, with the line and column
        cfg.setdefault("dataset_config", {})["data_root"] = str(data_root.expanduser().resolve())
        cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")
    return target
