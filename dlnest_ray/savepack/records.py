"""Typed records of ``_package.json``: :class:`Manifest` (the whole file), :class:`Segment` (one run
segment), :class:`CheckpointRecord` (one checkpoint). Pure: JSON values in, JSON values out.

Versions. The manifest's ``version`` key numbers its format: absent means DLNest's manifest (``prefix``
and the three track lists only), ``1`` is dlnest-ray's. A record's ``from_json`` takes the version of
the manifest it came from; ``to_json`` writes the current format, and a manifest read with a higher
version keeps that version when written back (its newer keys are carried along, see below).

Nothing is lost. Every ``from_json`` keeps keys it does not know in ``extra``, and a known key whose
value has an unexpected type is kept there as it was (its typed field reads None), so a package written
by newer code opens here and is written back with everything it had. A known key recorded as ``null``
is written back as ``null``; a field that is None and was not in the source is left out, as older
dlnest-ray left it out. ``to_json`` returns fresh objects: changing them changes no record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..errors import PackageError
from .json_fields import (
    Check,
    checkpoint_id,
    checkpoint_ids,
    emit,
    is_dict,
    is_dicts,
    is_int,
    is_num,
    is_str,
    is_strs,
    split_known,
)
from .layout import CKPT_PREFIX
from .tracks import TrackState

__all__ = [
    "DLNEST_VERSION",
    "MANIFEST_VERSION",
    "TRACK_KEYS",
    "CheckpointRecord",
    "Manifest",
    "Segment",
    "as_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1  # what this code writes
DLNEST_VERSION = 0  # a manifest without a "version" key: DLNest's
# Keys of the manifest that are about checkpoints; the others are the package's metadata (``meta``).
TRACK_KEYS = (
    "version",
    "prefix",
    "ckpt_fast",
    "ckpt_slow",
    "ckpt_consistent",
    "ckpt_pinned",
    "next_ckpt_id",
    "checkpoints",
)


# ------------------------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True, kw_only=True)
class CheckpointRecord:
    """One entry of ``_package.json["checkpoints"]`` (keyed by ``str(id)``): the file's size and sha256
    make it the checkpoint, not the file's existence."""

    id: int
    epoch: int | None
    step: int | None
    time: float
    bytes: int
    sha256: str | None  # None only for checkpoints adopted from a DLNest package without a manifest
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    _SPEC: ClassVar[dict[str, Check]] = {
        "epoch": is_int,
        "step": is_int,
        "time": is_num,
        "bytes": is_int,
        "sha256": is_str,
    }

    def to_json(self) -> dict[str, Any]:
        """The entry without its id (the id is the key); epoch, step and sha256 are written even when null."""
        values = {k: getattr(self, k) for k in self._SPEC}
        return emit(values, self.extra, frozenset(), always=self._SPEC)

    @classmethod
    def from_json(
        cls, ckpt_id: int, d: Mapping[str, Any], *, version: int = MANIFEST_VERSION
    ) -> CheckpointRecord:
        """Read entry ``ckpt_id``; a :class:`PackageError` when it has no size (it could not be verified)."""
        del version  # one format so far
        if not isinstance(d, Mapping):
            raise PackageError(f"checkpoint {ckpt_id} in the manifest is not a record: {d!r}")
        known, extra, _ = split_known(d, cls._SPEC)
        if "bytes" not in known:
            raise PackageError(f"checkpoint {ckpt_id} in the manifest has no valid size: {dict(d)!r}")
        return cls(
            id=ckpt_id,
            epoch=known.get("epoch"),
            step=known.get("step"),
            time=float(known.get("time", 0.0)),
            bytes=known["bytes"],
            sha256=known.get("sha256"),
            extra=extra,
        )


# ------------------------------------------------------------------------------------------- segments
@dataclass(frozen=True, kw_only=True)
class Segment:
    """One run segment of ``_package.json["segments"]``: a ``train`` or a ``resume`` in one process
    group, recorded by rank 0 when it starts (where and how it runs) and completed when it ends.

    ``started``/``ended``: unix seconds (``ended`` is None while running, or when the process was killed);
    ``status``: ``succeeded``, ``failed`` or ``interrupted`` once ended; ``finished_epoch``: the last epoch
    finished (-1: none); ``peak_gpu_mb``: the largest measured peak per GPU in MB over the segment's epochs
    and ranks, torch's peak reserved memory plus the CUDA context (None on CPU); ``reserved_mb``: the
    rank's reservation (its memory cap) per GPU when the segment started (None: no cap, and in files
    written before it was recorded); ``environment``: the names (not values) of the submitter's variables
    the run got; ``node``: the Ray node on a cluster; ``attempt``: a queued task's attempt (1: its first;
    issue 14) and ``retry_reason``: why the attempt before ended (on a retry). Every field is None when
    not recorded.
    """

    kind: str | None = None
    from_checkpoint: int | None = None
    start_epoch: int | None = None
    env: str | None = None
    world_size: int | None = None
    devices: tuple[str, ...] | None = None
    host: str | None = None
    node: str | None = None
    pid: int | None = None
    cuda_visible_devices: str | None = None
    description: str | None = None
    task_id: str | None = None
    seed: int | None = None
    environment: tuple[str, ...] | None = None
    started: float | None = None
    ended: float | None = None
    status: str | None = None
    finished_epoch: int | None = None
    error: str | None = None
    peak_gpu_mb: float | None = None
    reserved_mb: int | None = None
    attempt: int | None = None
    retry_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: frozenset[str] = frozenset()

    _SPEC: ClassVar[dict[str, Check]] = {
        "kind": is_str,
        "from_checkpoint": is_int,
        "start_epoch": is_int,
        "env": is_str,
        "world_size": is_int,
        "devices": is_strs,
        "host": is_str,
        "node": is_str,
        "pid": is_int,
        "cuda_visible_devices": is_str,
        "description": is_str,
        "task_id": is_str,
        "seed": is_int,
        "environment": is_strs,
        "started": is_num,
        "ended": is_num,
        "status": is_str,
        "finished_epoch": is_int,
        "error": is_str,
        "peak_gpu_mb": is_num,
        "reserved_mb": is_int,
        "attempt": is_int,
        "retry_reason": is_str,
    }
    _TUPLES: ClassVar[tuple[str, ...]] = ("devices", "environment")

    @property
    def has_ended(self) -> bool:
        return self.ended is not None

    @property
    def duration_s(self) -> float | None:
        """``ended - started``, or None when either is not recorded."""
        if self.started is None or self.ended is None:
            return None
        return float(self.ended) - float(self.started)

    def to_json(self) -> dict[str, Any]:
        return emit({k: getattr(self, k) for k in self._SPEC}, self.extra, self.nulls)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, version: int = MANIFEST_VERSION) -> Segment:
        del version  # one format so far
        known, extra, nulls = split_known(d, cls._SPEC, cls._TUPLES)
        return cls(**known, extra=extra, nulls=nulls)

    def merged(self, changes: Mapping[str, Any]) -> Segment:
        """This segment with ``changes`` (JSON keys, known or not) laid over it."""
        return Segment.from_json({**self.to_json(), **changes})


# ------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True, kw_only=True)
class Manifest:
    """The whole ``_package.json``.

    Checkpoints: ``prefix``, the three DLNest tracks, ``next_ckpt_id`` and ``checkpoints`` (None for a
    DLNest manifest, which records no sizes or hashes; also ``next_ckpt_id`` is None there). Metadata,
    written when the package is created: ``name``, ``description``, ``source_project`` (the project
    folder), ``seed``, ``created`` (ISO time), ``versions`` (package versions), ``git`` (``{"commit",
    "dirty"}``, None outside a repository), ``config_files`` (``[{"source", "copy"}]``), ``root_config``,
    ``freq_config`` (the copy of the ``-f`` file, if any). Then one :class:`Segment` per run segment.
    """

    version: int = MANIFEST_VERSION
    prefix: str = CKPT_PREFIX
    ckpt_fast: tuple[int, ...] = ()
    ckpt_slow: tuple[int, ...] = ()
    ckpt_consistent: tuple[int, ...] = ()
    ckpt_pinned: tuple[int, ...] = ()  # kept until the next save: a preempted run's last checkpoint
    next_ckpt_id: int | None = None
    checkpoints: dict[int, CheckpointRecord] | None = None
    segments: tuple[Segment, ...] = ()
    name: str | None = None
    description: str | None = None
    source_project: str | None = None
    seed: int | None = None
    created: str | None = None
    versions: dict[str, Any] | None = None
    git: dict[str, Any] | None = None
    config_files: tuple[dict[str, Any], ...] | None = None
    root_config: str | None = None
    freq_config: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: frozenset[str] = frozenset()

    _META_SPEC: ClassVar[dict[str, Check]] = {
        "name": is_str,
        "description": is_str,
        "source_project": is_str,
        "seed": is_int,
        "created": is_str,
        "versions": is_dict,
        "git": is_dict,
        "config_files": is_dicts,
        "root_config": is_str,
        "freq_config": is_str,
    }

    @property
    def is_dlnest(self) -> bool:
        """Read from a DLNest manifest: no checkpoint records (sizes, hashes), no metadata. (``SavePackage``
        records the files it finds when it opens such a package, so its manifest is no longer one.)"""
        return self.checkpoints is None

    @property
    def tracks(self) -> TrackState:
        """The tracks as a :class:`TrackState`; without ``next_ckpt_id``, the id after the last recorded
        one (after the last held one in a DLNest manifest, whose files may go further: the package
        reader numbers on from the files)."""
        if self.next_ckpt_id is not None:
            next_id = self.next_ckpt_id
        else:
            known = self.checkpoints if self.checkpoints is not None else self.tracks_held()
            next_id = max(known, default=-1) + 1
        return TrackState(
            fast=self.ckpt_fast,
            slow=self.ckpt_slow,
            consistent=self.ckpt_consistent,
            next_id=next_id,
            pinned=self.ckpt_pinned,
        )

    def tracks_held(self) -> frozenset[int]:
        """Every id some track holds (or that is pinned)."""
        return frozenset({*self.ckpt_fast, *self.ckpt_slow, *self.ckpt_consistent, *self.ckpt_pinned})

    def with_tracks(self, state: TrackState) -> Manifest:
        return replace(
            self,
            ckpt_fast=state.fast,
            ckpt_slow=state.slow,
            ckpt_consistent=state.consistent,
            ckpt_pinned=state.pinned,
            next_ckpt_id=state.next_id,
        )

    def segment_of(self, task_id: str) -> Segment | None:
        """The last segment a rank of queued task ``task_id`` recorded, or None."""
        mine = [s for s in self.segments if s.task_id == task_id]
        return mine[-1] if mine else None

    def to_json(self) -> dict[str, Any]:
        """The file's content. The version written is this code's, or the higher one it was read with."""
        out = emit({k: getattr(self, k) for k in self._META_SPEC}, self.extra, self.nulls)
        out.update(
            version=max(self.version, MANIFEST_VERSION),
            prefix=self.prefix,
            ckpt_fast=list(self.ckpt_fast),
            ckpt_slow=list(self.ckpt_slow),
            ckpt_consistent=list(self.ckpt_consistent),
            segments=[s.to_json() for s in self.segments],
        )
        if self.ckpt_pinned:  # only while a preempted run waits: DLNest's readers never see it otherwise
            out["ckpt_pinned"] = list(self.ckpt_pinned)
        if self.next_ckpt_id is not None:
            out["next_ckpt_id"] = self.next_ckpt_id
        if self.checkpoints is not None:
            out["checkpoints"] = {str(i): r.to_json() for i, r in sorted(self.checkpoints.items())}
        return out

    def meta_json(self) -> dict[str, Any]:
        """The metadata part of :meth:`to_json` (every key but :data:`TRACK_KEYS`), segments as dicts."""
        return {k: v for k, v in self.to_json().items() if k not in TRACK_KEYS}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Manifest:
        """Read a manifest (DLNest's or any version of dlnest-ray's); a :class:`PackageError` when its
        checkpoint keys are malformed (tracks that are not lists of ids, records that are not records)."""
        if not isinstance(raw, Mapping):
            raise PackageError(f"the manifest is not a JSON object: {type(raw).__name__}")
        version = raw.get("version", DLNEST_VERSION)
        if not is_int(version):
            raise PackageError(f"the manifest's version is not a number: {version!r}")
        if version > MANIFEST_VERSION:
            log.info("manifest version %d is newer than %d: its new keys are kept", version, MANIFEST_VERSION)
        prefix = raw.get("prefix", CKPT_PREFIX)
        if not isinstance(prefix, str):
            raise PackageError(f"the manifest's checkpoint prefix is not a string: {prefix!r}")
        next_id = raw.get("next_ckpt_id")
        if next_id is not None and not (is_int(next_id) and next_id >= 0):
            raise PackageError(f"the manifest's next_ckpt_id is not a checkpoint id: {next_id!r}")
        checkpoints: dict[int, CheckpointRecord] | None = None
        if "checkpoints" in raw:
            entries = raw["checkpoints"]
            if not isinstance(entries, Mapping):
                raise PackageError(f"the manifest's checkpoints are not a JSON object: {entries!r}")
            checkpoints = {}
            for key, entry in entries.items():
                ckpt_id = checkpoint_id(key, "checkpoints")
                checkpoints[ckpt_id] = CheckpointRecord.from_json(ckpt_id, entry, version=version)
        segments: list[Segment] = []
        raw_segments = raw.get("segments") or []
        if not isinstance(raw_segments, list):
            log.warning("the manifest's segments are not a list; they are ignored: %r", raw_segments)
            raw_segments = []
        for s in raw_segments:
            if isinstance(s, Mapping):
                segments.append(Segment.from_json(s, version=version))
            else:
                log.warning("a run segment in the manifest is not a record; it is ignored: %r", s)
        rest = {k: v for k, v in raw.items() if k not in TRACK_KEYS and k != "segments"}
        meta, extra, nulls = split_known(rest, cls._META_SPEC, ("config_files",))
        return cls(
            version=version,
            prefix=prefix,
            ckpt_fast=checkpoint_ids(raw, "ckpt_fast"),
            ckpt_slow=checkpoint_ids(raw, "ckpt_slow"),
            ckpt_consistent=checkpoint_ids(raw, "ckpt_consistent"),
            ckpt_pinned=checkpoint_ids(raw, "ckpt_pinned"),
            next_ckpt_id=next_id,
            checkpoints=checkpoints,
            segments=tuple(segments),
            **meta,
            extra=extra,
            nulls=nulls,
        )

    def merged(self, changes: Mapping[str, Any]) -> Manifest:
        """This manifest with ``changes`` (top-level JSON keys, known or not) laid over it."""
        return Manifest.from_json({**self.to_json(), "version": self.version, **changes})


def as_manifest(meta: Manifest | Mapping[str, Any]) -> Manifest:
    """``meta`` as a :class:`Manifest`: a manifest as it is, a dict (``SavePackage.meta``, a whole
    ``_package.json``) read with :meth:`Manifest.from_json`."""
    return meta if isinstance(meta, Manifest) else Manifest.from_json(meta)
