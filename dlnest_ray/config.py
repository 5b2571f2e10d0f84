"""Config loading with DLNest's merge rules (pure: reads files, never writes).

Rules, exactly as DLNest's ``SavePackage.__loadArgs``:

* a file's own keys (all but ``child_jsons``) are merged first, then each of its ``child_jsons`` in list
  order, depth first; a later file wins;
* nested dicts merge key by key; lists and scalars are replaced; a dict merged onto a scalar is an error;
* ``child_jsons`` entries are relative to the folder of the JSON that lists them;
* the freq file (``-f``) is merged last and may have ``child_jsons`` of its own;
* the merged dict never contains ``child_jsons``.

Paths inside the merged config: ``root_file_path`` is relative to the folder of the root config (so a
project can be moved); ``save_root``, the code files and ``other_file_paths`` are relative to
``root_file_path``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .plugins import check_plugins

__all__ = [
    "CHECKPOINT_KEYS",
    "CodeLayout",
    "LoadedConfig",
    "load_config",
    "load_json",
    "merge",
    "missing_keys",
    "resolve_layout",
]

CHILD_KEY = "child_jsons"
CHECKPOINT_KEYS = (
    "max_ckpt_in_fast_track",
    "max_ckpt_in_slow_track",
    "dilation_in_slow_track",
    "max_ckpt_in_consistent_track",
)
# (primary key, DLNest 0.3 alias)
_ALIASED_KEYS = (("model_name", "runner_name"), ("model_file_path", "runner_file_path"))
_PLAIN_REQUIRED = (
    "save_root",
    "dataset_name",
    "life_cycle_name",
    "dataset_file_path",
    "life_cycle_file_path",
)


@dataclass(frozen=True, kw_only=True)
class LoadedConfig:
    """The merged config and every file that went into it, in merge order (root first, freq last)."""

    args: dict[str, Any]
    root_config: Path
    freq_config: Path | None = None
    files: tuple[Path, ...] = field(default_factory=tuple)


@dataclass(frozen=True, kw_only=True)
class CodeLayout:
    """Where a project's code lives, with every path absolute."""

    root_dir: Path
    save_root: Path
    model_name: str
    model_file: Path
    dataset_name: str
    dataset_file: Path
    life_cycle_name: str
    life_cycle_file: Path
    other_files: tuple[Path, ...]

    @property
    def code_files(self) -> tuple[Path, ...]:
        return (self.model_file, self.dataset_file, self.life_cycle_file, *self.other_files)


def load_json(path: Path) -> dict[str, Any]:
    """Read one JSON object; errors name the file and, for syntax errors, the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg}); fix the file and try again"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a JSON object, not {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any], *, source: str = "") -> dict[str, Any]:
    """Return ``base`` with ``overlay`` merged onto it (DLNest's ``__replaceArgs``); inputs are untouched."""
    out = copy.deepcopy(dict(base))  # the result shares nothing with the inputs
    for key, value in overlay.items():
        out[key] = _merge_value(out.get(key, _ABSENT), value, key, source)
    return out


_ABSENT = object()


def _merge_value(old: Any, new: Any, key_path: str, source: str) -> Any:
    if not isinstance(new, dict):
        return copy.deepcopy(new)
    if old is _ABSENT:
        return copy.deepcopy(new)
    if not isinstance(old, dict):
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}key '{key_path}' is a dict here but {type(old).__name__} {old!r} in an earlier file; "
            "a dict cannot be merged onto a scalar: rename the key or make both dicts"
        )
    merged = dict(old)
    for k, v in new.items():
        merged[k] = _merge_value(merged.get(k, _ABSENT), v, f"{key_path}.{k}", source)
    return merged


def _load_tree(
    path: Path, args: dict[str, Any], stack: tuple[Path, ...], files: list[Path]
) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack[stack.index(path) :], path))
        raise ConfigError(f"child_jsons cycle: {chain}; remove one of these references")
    data = load_json(path)
    files.append(path)
    children = data.get(CHILD_KEY, [])
    if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
        raise ConfigError(f"{path}: '{CHILD_KEY}' must be a list of file paths")
    own = {k: v for k, v in data.items() if k != CHILD_KEY}
    args = merge(args, own, source=str(path))
    for child in children:
        args = _load_tree(path.parent / child, args, (*stack, path), files)
    return args


def load_config(root_config: str | Path, freq_config: str | Path | None = None) -> LoadedConfig:
    """Load ``root_config`` and its ``child_jsons``, then ``freq_config`` (and its children) on top."""
    root = Path(root_config).expanduser().resolve()
    files: list[Path] = []
    args = _load_tree(root, {}, (), files)
    freq = None
    if freq_config:
        freq = Path(freq_config).expanduser().resolve()
        args = _load_tree(freq, args, (), files)
    return LoadedConfig(args=args, root_config=root, freq_config=freq, files=tuple(files))


def _get_aliased(args: Mapping[str, Any], primary: str, alias: str) -> Any:
    return args[primary] if primary in args else args.get(alias)


def missing_keys(args: Mapping[str, Any]) -> list[str]:
    """Every required key that ``args`` lacks (aliases count), in a stable order."""
    missing = [p for p, a in _ALIASED_KEYS if p not in args and a not in args]
    missing += [k for k in _PLAIN_REQUIRED if k not in args]
    ckpt = args.get("checkpoint_args")
    if not isinstance(ckpt, dict):
        missing.append("checkpoint_args")
    else:
        missing += [f"checkpoint_args.{k}" for k in CHECKPOINT_KEYS if k not in ckpt]
    return missing


def _check_checkpoint_args(ckpt: Mapping[str, Any], source: str) -> None:
    for key in CHECKPOINT_KEYS:
        value = ckpt[key]
        low = 1 if key == "dilation_in_slow_track" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{source}: checkpoint_args.{key} must be an integer >= {low}, got {value!r}")


def resolve_layout(
    args: Mapping[str, Any], base_dir: Path, *, source: str, check_files: bool = True
) -> CodeLayout:
    """Validate ``args`` and resolve its paths against ``base_dir`` (the folder of the root config).

    Raises one :class:`ConfigError` listing every missing required key, or naming every code file that
    does not exist (when ``check_files``).
    """
    missing = missing_keys(args)
    if missing:
        raise ConfigError(f"{source}: missing required keys: {', '.join(missing)}")
    _check_checkpoint_args(args["checkpoint_args"], source)
    for key in ("dataset_name", "life_cycle_name"):
        if not isinstance(args[key], str) or not args[key]:
            raise ConfigError(f"{source}: '{key}' must be a non-empty string")
    if not isinstance(args["save_root"], str):  # "" is the root_file_path folder itself, as in DLNest
        raise ConfigError(f"{source}: 'save_root' must be a path (a string; \"\" is root_file_path)")
    check_plugins(args, source)
    root_dir = (base_dir / str(args.get("root_file_path") or ".")).resolve()
    others = args.get("other_file_paths") or []
    if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
        raise ConfigError(f"{source}: 'other_file_paths' must be a list of paths")

    def at_root(p: str) -> Path:
        return (root_dir / Path(p).expanduser()).resolve()

    layout = CodeLayout(
        root_dir=root_dir,
        save_root=at_root(args["save_root"]),
        model_name=str(_get_aliased(args, "model_name", "runner_name")),
        model_file=at_root(str(_get_aliased(args, "model_file_path", "runner_file_path"))),
        dataset_name=args["dataset_name"],
        dataset_file=at_root(args["dataset_file_path"]),
        life_cycle_name=args["life_cycle_name"],
        life_cycle_file=at_root(args["life_cycle_file_path"]),
        other_files=tuple(at_root(o) for o in others),
    )
    if check_files:
        absent = [str(p) for p in layout.code_files if not p.exists()]
        if absent:
            raise ConfigError(f"{source}: code files not found: {', '.join(absent)}")
    return layout
