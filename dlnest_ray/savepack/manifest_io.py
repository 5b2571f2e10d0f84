"""Reading and writing a package's ``_package.json``, and the track limits its ``args.json`` sets.

The manifest is written atomically (temp file, fsync, rename), so a reader sees the old one or the new
one. A DLNest package's manifest names track ids only; reading it adopts the tracked checkpoint files
that exist, by size, without hashes (a torn DLNest file is found when it is loaded).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..config import load_json
from ..errors import ConfigError, PackageError
from . import layout
from .records import CheckpointRecord, Manifest
from .tracks import TrackLimits

__all__ = ["read_manifest", "track_limits", "write_manifest"]

log = logging.getLogger(__name__)


def track_limits(args: Mapping[str, Any], source: str) -> TrackLimits:
    """The track limits of ``args["checkpoint_args"]``; a :class:`ConfigError` naming ``source`` if bad."""
    ck = args.get("checkpoint_args")
    try:
        assert isinstance(ck, Mapping)
        return TrackLimits(
            fast=int(ck["max_ckpt_in_fast_track"]),
            slow=int(ck["max_ckpt_in_slow_track"]),
            dilation=int(ck["dilation_in_slow_track"]),
            consistent=int(ck["max_ckpt_in_consistent_track"]),
        )
    except (AssertionError, KeyError, TypeError, ValueError):
        raise ConfigError(
            f"{source}: checkpoint_args needs integer max_ckpt_in_fast_track, max_ckpt_in_slow_track, "
            "dilation_in_slow_track (>= 1) and max_ckpt_in_consistent_track"
        ) from None


def read_manifest(package: Path) -> Manifest:
    """The manifest of ``package``, with checkpoint records and ``next_ckpt_id`` always set (adopted
    from the files when DLNest wrote it). A :class:`PackageError` names the file when it is malformed."""
    path = layout.manifest_path(package)
    raw = load_json(path)  # a ConfigError naming the file, with line and column, for malformed JSON
    try:
        manifest = Manifest.from_json(raw)
    except PackageError as e:
        raise PackageError(f"{path}: {e}") from None
    if manifest.is_dlnest:
        manifest = _adopt_dlnest_checkpoints(package, manifest)
    elif manifest.next_ckpt_id is None:
        manifest = replace(manifest, next_ckpt_id=manifest.tracks.next_id)
    return manifest


def _adopt_dlnest_checkpoints(package: Path, manifest: Manifest) -> Manifest:
    """Records for the tracked files that exist (size and time, no hash); the next id follows every
    checkpoint file on disk, as DLNest's ``initCkptsFromExist`` numbers on."""
    records: dict[int, CheckpointRecord] = {}
    for i in sorted({*manifest.ckpt_fast, *manifest.ckpt_slow, *manifest.ckpt_consistent}):
        f = layout.ckpt_path(package, i, manifest.prefix)
        try:
            st = f.stat()
        except FileNotFoundError:
            log.info("%s: DLNest's tracks name checkpoint %d, whose file is gone", package, i)
            continue
        records[i] = CheckpointRecord(
            id=i, epoch=None, step=None, time=st.st_mtime, bytes=st.st_size, sha256=None
        )
    on_disk = [
        parsed[1]
        for f in layout.ckpt_dir(package).glob(layout.ckpt_glob(""))
        if (parsed := layout.parse_ckpt_name(f.name)) is not None
    ]
    next_id = max([*on_disk, *records], default=-1) + 1
    return replace(manifest, checkpoints=records, next_ckpt_id=next_id)


def write_manifest(package: Path, manifest: Manifest) -> None:
    """Replace ``package``'s manifest atomically and durably."""
    atomic_write_json(layout.manifest_path(package), manifest.to_json())
