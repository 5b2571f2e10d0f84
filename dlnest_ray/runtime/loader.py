"""Import user code from a save package: the copied code, never an older module of the same name.

DLNest *appended* each module's folder to ``sys.path``, so a same-named module that was importable
already won, and an absolute code path imported the original file instead of the copy. Here the
package's folders go to the front of ``sys.path``, any cached module whose file lies outside the
package but whose name a package file provides is evicted first, and code paths come from ``args.json``,
which points at the copies.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from ..config import resolve_layout
from ..errors import UserCodeError
from ..savepack.layout import args_path

__all__ = ["UserClasses", "load_script", "load_user_classes"]


@dataclass(frozen=True, kw_only=True)
class UserClasses:
    model: type
    dataset: type
    life_cycle: type


def _provided_names(folders: list[Path]) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for f in folder.iterdir():
            if f.suffix == ".py":
                names.add(f.stem)
            elif f.is_dir() and (f / "__init__.py").exists():
                names.add(f.name)
    return names


def _evict_foreign(names: set[str], package: Path) -> None:
    for name in list(sys.modules):
        top = name.split(".", 1)[0]
        if top not in names:
            continue
        file = getattr(sys.modules[name], "__file__", None)
        if file is None or not Path(file).resolve().is_relative_to(package):
            del sys.modules[name]


def _import_file(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    return module


def _get_class(module: ModuleType, name: str, path: Path, role: str) -> type:
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__
        )
        raise UserCodeError(
            f"{path} has no class {name!r} for the {role} (classes there: {', '.join(found) or 'none'}); "
            f"fix the {role}'s *_name key in the config"
        )
    return cls


def load_user_classes(args: dict[str, Any], package: Path) -> UserClasses:
    """Import the model, dataset and life-cycle classes named in ``args`` from the package folder."""
    package = package.resolve()
    layout = resolve_layout(args, package, source=str(args_path(package)))
    folders = list(
        dict.fromkeys(
            [package, *(f.parent for f in (layout.model_file, layout.dataset_file, layout.life_cycle_file))]
        )
    )
    for folder in reversed(folders):
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        sys.path.insert(0, str(folder))
    _evict_foreign(_provided_names(folders), package)
    roles = (
        ("life cycle", layout.life_cycle_file, layout.life_cycle_name),
        ("dataset", layout.dataset_file, layout.dataset_name),
        ("model", layout.model_file, layout.model_name),
    )
    found: dict[str, type] = {}
    for role, path, name in roles:
        try:
            module = sys.modules.get(path.stem)
            if module is None or Path(getattr(module, "__file__", "") or "").resolve() != path:
                module = _import_file(path, path.stem)
        except UserCodeError:
            raise
        except Exception as e:
            raise UserCodeError(f"importing the {role} file {path} failed: {type(e).__name__}: {e}") from e
        found[role] = _get_class(module, name, path, role)
    return UserClasses(model=found["model"], dataset=found["dataset"], life_cycle=found["life cycle"])


def load_script(path: Path) -> Callable[[Any], Any]:
    """Import an analysis script afresh (edits take effect) and return its ``experience`` function."""
    if not path.is_file():
        raise UserCodeError(f"analysis script not found: {path}")
    name = f"_dlnest_script_{abs(hash(str(path)))}"
    try:
        module = _import_file(path, name)
    except Exception as e:
        raise UserCodeError(f"importing the script {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(name, None)
    fn = getattr(module, "experience", None)
    if not callable(fn):
        raise UserCodeError(f"{path} defines no experience(self) function")
    return cast(Callable[[Any], Any], fn)
