"""Creating a save package folder: its name, the code and config snapshot, and ``args.json``.

Never deletes or reuses an existing folder: the target is claimed with an exclusive ``mkdir``; if
anything fails afterwards, only the folder this call created is removed.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

from ..atomic import atomic_write_json
from ..config import LoadedConfig
from ..errors import PackageError
from . import layout

__all__ = [
    "CODE_PATH_KEYS",
    "NewPackage",
    "claim_folder",
    "create_package_dir",
    "environment_info",
    "git_info",
    "remove_tree",
    "validate_name",
]

CODE_PATH_KEYS = ("model_file_path", "runner_file_path", "dataset_file_path", "life_cycle_file_path")
log = logging.getLogger(__name__)

CONFIGS_DIR = layout.CONFIGS_DIR  # older names, kept for code that imports them from here
SCRIPTS_DIR = layout.SCRIPTS_DIR  # copied too: analyzers fall back to it when the project is gone
_MAX_NAME_TRIES = 50


def validate_name(name: str) -> str:
    """Refuse names that could escape ``save_root`` or hide: separators, ``..``, empty, leading dot."""
    bad = (
        not name
        or name.strip() != name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in ("/", "\\", "\0", os.sep))
        or len(name.encode()) > 200
    )
    if bad:
        raise PackageError(
            f"invalid package name {name!r}: use a plain folder name (no '/', '\\', '..', leading '.', "
            "surrounding spaces; at most 200 bytes)"
        )
    return name


def _timestamp_name(prefix: str) -> str:
    return prefix + time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime()) + f"_{random.randint(0, 999):03d}"


def _claim(save_root: Path, name: str | None, prefix: str) -> Path:
    if name is not None:
        validate_name(name)  # before anything is created
    try:
        save_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PackageError(f"cannot create save_root {save_root}: {e.strerror}") from None
    if name is not None:
        target = save_root / validate_name(name)
        try:
            target.mkdir()
        except FileExistsError:
            raise PackageError(
                f"a package named {name!r} already exists in {save_root}; choose another description "
                "(existing packages are never overwritten)"
            ) from None
        return target
    for _ in range(_MAX_NAME_TRIES):
        target = save_root / _timestamp_name(prefix)
        try:
            target.mkdir()
            return target
        except FileExistsError:  # another package took this name in the same second: draw again
            continue
    raise PackageError(f"could not find a free package name in {save_root} after {_MAX_NAME_TRIES} tries")


def claim_folder(save_root: Path, prefix: str) -> Path:
    """Create a new folder ``<prefix><timestamp>`` in ``save_root`` (made when missing) and return it; an
    existing folder is never reused (a sweep's folder, :func:`~.layout.sweep_folder_prefix`)."""
    validate_name(prefix + "x")  # the name stays in save_root
    return _claim(save_root, None, prefix)


def _placement(raw: str, root_dir: Path) -> tuple[Path, PurePath]:
    """(source path, path inside the package) for one code path as written in the config."""
    p = Path(raw).expanduser()
    if p.is_absolute():
        return p.resolve(), PurePath(p.name)
    rel = PurePath(os.path.normpath(raw))
    if rel.parts and rel.parts[0] == "..":
        raise PackageError(
            f"code path {raw!r} points outside the project folder {root_dir}; move it inside or give an "
            "absolute path (absolute paths are copied to the package root)"
        )
    return (root_dir / rel).resolve(), rel


def _copy_into(src: Path, dest: Path, *, skip: frozenset[Path]) -> None:
    """Copy a file or folder; the folders of ``skip`` (the save root; a sweep's folder in it) are never
    copied, so a listed project folder that contains them does not copy packages into the package."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        shutil.copy2(src, dest)
        return

    def ignore(folder: str, names: list[str]) -> set[str]:
        base = Path(folder)
        return {n for n in names if n == "__pycache__" or n.endswith(".pyc") or (base / n).resolve() in skip}

    if src.resolve() in skip:
        raise PackageError(f"code path {src} is the save_root itself; list the code files instead")
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=ignore)


def remove_tree(folder: Path) -> None:
    """Remove a folder this code created, logging (not raising) what cannot be removed: used while
    another error is on its way up, which must not be replaced."""

    def failed(function: Any, path: str, exc_info: Any) -> None:
        log.warning(
            "could not remove %s (%s): %s", path, getattr(function, "__name__", function), exc_info[1]
        )

    shutil.rmtree(folder, onerror=failed)


def git_info(folder: Path) -> dict[str, Any] | None:
    """The git commit (and whether the tree is dirty) of ``folder``, or None outside a repository."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:  # not a repository (or git refuses it): nothing to record
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError) as e:
        log.info("no git commit recorded for %s: %s", folder, e)
        return None


def environment_info() -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:  # not installed: recorded as null, as intended
            return None

    return {
        "dlnest_ray": version("dlnest-ray"),
        "torch": version("torch"),
        "numpy": version("numpy"),
        "ray": version("ray"),
        "python": sys.version.split()[0],
    }


@dataclass(frozen=True, kw_only=True)
class NewPackage:
    path: Path
    args: dict[str, Any]
    manifest_meta: dict[str, Any]


def _snapshot_code(
    args: Mapping[str, Any], root_dir: Path, target: Path, skip: frozenset[Path]
) -> dict[str, Any]:
    """Copy every code path (never a folder of ``skip``); return the args entries rewritten to point at
    the copies."""
    rewritten: dict[str, Any] = {}
    taken: dict[PurePath, Path] = {}

    def place(raw: str) -> str:
        src, rel = _placement(raw, root_dir)
        if not src.exists():
            raise PackageError(f"code path not found: {src}")
        if taken.get(rel, src) != src:
            raise PackageError(f"two code paths would be copied to the same place {rel} in the package")
        if rel not in taken:
            _copy_into(src, target / rel, skip=skip)
            taken[rel] = src
        return f"./{rel.as_posix()}"

    for key in CODE_PATH_KEYS:
        if isinstance(args.get(key), str):
            rewritten[key] = place(args[key])
    others = args.get("other_file_paths") or []
    rewritten["other_file_paths"] = [place(o) for o in others]
    return rewritten


def _snapshot_configs(loaded: LoadedConfig, target: Path, skip: frozenset[Path]) -> dict[str, Any]:
    base = loaded.root_config.parent
    copies: list[dict[str, str]] = []
    freq_copy = None
    for n, src in enumerate(dict.fromkeys(loaded.files)):
        try:
            rel = layout.config_copy(src.relative_to(base))
        except ValueError:  # outside the project folder
            rel = layout.external_config_copy(n, src.name)
        _copy_into(src, target / rel, skip=skip)
        copies.append({"source": str(src), "copy": rel.as_posix()})
        if src == loaded.freq_config:
            freq_copy = rel.as_posix()
    return {"config_files": copies, "root_config": str(loaded.root_config), "freq_config": freq_copy}


def create_package_dir(
    args: Mapping[str, Any],
    *,
    root_dir: Path,
    save_root: Path,
    name: str | None,
    no_save: bool,
    copy_files: bool,
    loaded: LoadedConfig | None,
    description: str,
    seed: int,
    also_skip: Path | None = None,
) -> NewPackage:
    """Claim a new folder under ``save_root`` and fill it; returns the args to write and manifest metadata.

    ``name`` overrides the timestamp name (validated); ``no_save`` prefixes ``NOSAVE_`` to a timestamp
    name and wins over ``name``, as in DLNest. ``args.json`` is written here; ``_package.json`` is
    written by the caller last, so a folder without it is never taken for a package. ``also_skip``: a
    folder never copied besides ``save_root`` (the config's save root, when the package goes into a
    sweep's folder inside it).
    """
    target = _claim(save_root, None if no_save else (name or None), layout.NOSAVE_PREFIX if no_save else "")
    skip = frozenset(p.resolve() for p in (target.parent, also_skip) if p is not None)
    try:
        out = {k: v for k, v in args.items() if k != "child_jsons"}
        if copy_files:
            out.update(_snapshot_code(args, root_dir, target, skip))
            scripts = layout.scripts_dir(root_dir)
            if scripts.is_dir() and not layout.scripts_dir(target).exists():  # the analyzers' fallback
                _copy_into(scripts, layout.scripts_dir(target), skip=skip)
        meta: dict[str, Any] = {}
        if loaded is not None:
            meta.update(_snapshot_configs(loaded, target, skip))
        out["root_file_path"] = str(target)
        out["save_root"] = str(save_root)
        atomic_write_json(layout.args_path(target), out)
        meta.update(
            name=target.name,
            description=description,
            source_project=str(root_dir),
            seed=seed,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            versions=environment_info(),
            git=git_info(root_dir),
        )
        return NewPackage(path=target, args=out, manifest_meta=meta)
    except BaseException as e:
        remove_tree(target)
        if isinstance(e, OSError):
            raise PackageError(f"could not create the save package in {save_root}: {e}") from e
        raise
