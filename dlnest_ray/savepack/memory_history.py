"""What earlier runs measured: the memory fingerprint of a run and the peaks of its look-alikes.

Two runs use the same GPU memory when they run the same model code with the same config, up to the
keys that do not change memory (``memory_neutral_keys``: by default ``epochs`` and ``seed``; a user
adds ``lr`` and the like). The fingerprint is a hash of the package's Python files and its config less
those keys (and less the paths that differ between any two packages); it is recorded in the package's
``_package.json`` when the center creates it, so later runs find their look-alikes by reading
manifests only. Packages without a fingerprint or without a recorded peak (CPU runs, DLNest packages)
are ignored without complaint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import layout
from .records import Manifest

__all__ = [
    "DEFAULT_NEUTRAL_KEYS",
    "FINGERPRINT_KEY",
    "NEUTRAL_KEYS_KEY",
    "Learned",
    "fingerprint",
    "learned_peak",
    "manifest_peak",
    "neutral_keys",
    "package_fingerprint",
]

log = logging.getLogger(__name__)

NEUTRAL_KEYS_KEY = "memory_neutral_keys"
DEFAULT_NEUTRAL_KEYS: tuple[str, ...] = ("epochs", "seed")
FINGERPRINT_KEY = "memory_fingerprint"  # in _package.json's metadata
# differ between any two packages, and say nothing about the memory a run needs
_PATH_KEYS = frozenset({"root_file_path", "save_root", "child_jsons", NEUTRAL_KEYS_KEY})
_CODE_SKIP = frozenset(
    {layout.CKPT_DIR, layout.CONFIGS_DIR, layout.RUN_DIR, layout.SCRIPTS_DIR, layout.TB_DIR}
)


def neutral_keys(args: Mapping[str, Any], source: str = "the config") -> tuple[str, ...]:
    """The config's ``memory_neutral_keys`` (default ``epochs``, ``seed``); a :class:`ConfigError` in
    one line when it is not a list of strings. A dotted key (``model_config.lr``) names one place; a
    plain one (``lr``) that key at any depth."""
    raw = args.get(NEUTRAL_KEYS_KEY, list(DEFAULT_NEUTRAL_KEYS))
    if not isinstance(raw, list) or not all(isinstance(k, str) and k for k in raw):
        raise ConfigError(
            f"{source}: {NEUTRAL_KEYS_KEY} must be a list of key names (strings), "
            f'for example ["epochs", "seed", "lr"]; got {json.dumps(raw)[:80]}'
        )
    return tuple(raw)


def _without(value: Any, neutral: Sequence[str], path: str = "") -> Any:
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, item in value.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key in neutral or dotted in neutral or (not path and key in _PATH_KEYS):
            continue
        out[str(key)] = _without(item, neutral, dotted)
    return out


def fingerprint(args: Mapping[str, Any], code: Iterable[tuple[str, bytes]], neutral: Sequence[str]) -> str:
    """A hex digest of the config less ``neutral`` keys and of the code files (relative name, bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps(_without(args, neutral), sort_keys=True, default=str).encode())
    for name, data in sorted(code):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:32]


def package_fingerprint(package: Path, args: Mapping[str, Any], neutral: Sequence[str]) -> str:
    """:func:`fingerprint` of a package folder: its config and its ``*.py`` files (the code snapshot)."""
    code: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in _CODE_SKIP or any(p.startswith(".") for p in rel.parts):
            continue
        try:
            code.append((rel.as_posix(), path.read_bytes()))
        except OSError as e:  # a file that vanished: the fingerprint just will not match others
            log.warning("memory fingerprint: cannot read %s: %s", path, e)
    return fingerprint(args, code, neutral)


def manifest_peak(manifest: Manifest) -> int | None:
    """The largest peak (MB on one GPU) any segment of the package measured, or None."""
    peaks = [s.peak_gpu_mb for s in manifest.segments if s.peak_gpu_mb is not None and s.peak_gpu_mb > 0]
    return int(-(-max(peaks) // 1)) if peaks else None


@dataclass(frozen=True, kw_only=True)
class Learned:
    """The largest peak earlier look-alike runs measured, and how many runs measured one."""

    peak_mb: int
    runs: int


def learned_peak(save_root: Path, fp: str, *, exclude: Path | None = None) -> Learned | None:
    """The look-alikes of fingerprint ``fp`` among the packages directly under ``save_root`` (and one
    level deeper, for sweeps' folders), ``exclude`` left out; None when none measured a peak."""
    if not fp or not save_root.is_dir():
        return None
    peak, runs = 0, 0
    manifests = [*save_root.glob(f"*/{layout.MANIFEST_FILE}"), *save_root.glob(f"*/*/{layout.MANIFEST_FILE}")]
    for path in manifests:
        if exclude is not None and path.parent == exclude:
            continue
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get(FINGERPRINT_KEY) != fp:
                continue
            found = manifest_peak(Manifest.from_json(raw))
        except (OSError, ValueError, TypeError, KeyError) as e:  # a damaged or foreign file: not a look-alike
            log.debug("memory history: skipping %s: %s", path, e)
            continue
        if found is not None:
            peak, runs = max(peak, found), runs + 1
    return Learned(peak_mb=peak, runs=runs) if runs else None
