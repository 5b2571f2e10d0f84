"""The save package: one run's folder, and the ``SavePackage`` API that works without Ray or a GPU.

``_package.json`` is the single source of truth for which checkpoints exist. It is written atomically,
after a checkpoint file is durable and *before* evicted files are deleted. A checkpoint file that the
manifest does not name, or whose size or sha256 differs from the record, is never loaded as "latest".
Names inside the package come from :mod:`.layout`; the manifest's content is a :class:`.records.Manifest`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from ..config import LoadedConfig, load_config, load_json, resolve_layout
from ..errors import CheckpointError, ConfigError, PackageError
from . import layout
from .checkpoint import CheckpointWriter, file_matches, load_file, snapshot, write_file
from .create import create_package_dir, remove_tree, validate_name
from .manifest_io import read_manifest, track_limits, write_manifest
from .records import MANIFEST_VERSION, TRACK_KEYS, CheckpointRecord, Manifest, Segment
from .tracks import TrackLimits, TrackState, admit, truncate

__all__ = ["ARGS", "CKPT_DIR", "MANIFEST", "MANIFEST_VERSION", "SavePackage"]

log = logging.getLogger(__name__)

# Older names of layout's constants, kept for code that imports them from here.
MANIFEST = layout.MANIFEST_FILE
ARGS = layout.ARGS_FILE
CKPT_DIR = layout.CKPT_DIR


class SavePackage:
    """One run's save package.

    Standalone use (DLNest's "use the save package alone")::

        pkg = SavePackage("root_config.json")          # or SavePackage(); pkg.give_args({...})
        pkg.save_to_new_dir()                           # copy_files=False when there is no code to copy
        pkg.save_checkpoint(state, hold=False)
        pkg = SavePackage.open(path); pkg.state_dict()  # latest valid checkpoint

    Checkpoint ids count saves from 0. Only one process may write a package at a time (rank 0). Each
    object has its own lock and background writer; :meth:`initFromAnExistSavePackage` keeps them.
    """

    def __init__(self, config_path: str | Path = "", freq_path: str | Path = "") -> None:
        self.args: dict[str, Any] = {}
        self.path: Path | None = None
        self._loaded: LoadedConfig | None = None
        self._base_dir = Path.cwd()
        self._manifest = Manifest(checkpoints={}, next_ckpt_id=0)  # what the manifest on disk says
        self._tracks = TrackState()  # reserved: includes a save still being written
        self._limits: TrackLimits | None = None
        self._lock = threading.RLock()
        self._writer = CheckpointWriter()
        self._last_snapshot: Any = None
        if config_path:
            self._loaded = load_config(config_path, freq_path or None)
            self.args = self._loaded.args
            self._base_dir = self._loaded.root_config.parent

    # ----------------------------------------------------------------------------------- creation
    def give_args(self, args: Mapping[str, Any]) -> None:
        """Use ``args`` (a merged config dict) instead of config files; relative paths resolve from cwd."""
        self.args = dict(args)
        self._loaded = None
        self._base_dir = Path.cwd()

    def override(self, values: Mapping[str, Any]) -> None:
        """Lay ``values`` (dotted key → value: ``{"model_config.lr": 0.01}``) over the merged config
        before the package is created, so ``args.json`` holds them (a sweep trial's values). Dicts missing
        on the way are created; a key below a value that is not a dict is an error, and nothing changes.
        """
        from ..sweeps.space import apply  # pure, no other dependency

        if self.path is not None:
            raise PackageError(f"{self.path} exists already: its config can no longer change")
        self.args = apply(self.args, values)

    def check_layout(self) -> Path:
        """What :meth:`save_to_new_dir` checks before it creates anything — required keys, code files,
        checkpoint limits — without creating anything; returns the save root it would use."""
        source = str(self._loaded.root_config) if self._loaded else "config"
        found = resolve_layout(self.args, self._base_dir, source=source)
        track_limits(self.args, source)
        return found.save_root

    def save_to_new_dir(
        self,
        override_name: str = "",
        copy_files: bool = True,
        *,
        no_save: bool = False,
        description: str = "",
        seed: int | None = None,
        parent: Path | None = None,
    ) -> Path:
        """Create the package folder under ``save_root`` and return its path.

        ``override_name`` names the folder (validated; an existing folder is an error, never overwritten);
        otherwise ``YYYY-mm-dd_HH-MM-SS_<3 digits>``, or ``NOSAVE_<timestamp>`` with ``no_save``.
        ``parent``: create it in this folder instead of the config's ``save_root`` (a sweep's folder);
        ``args.json`` then names this folder as its ``save_root``.
        """
        if self.path is not None:
            raise PackageError(f"this SavePackage already has a folder: {self.path}")
        source = str(self._loaded.root_config) if self._loaded else "config"
        if copy_files:  # first: it lists every missing key at once
            found = resolve_layout(self.args, self._base_dir, source=source)
            root_dir, save_root = found.root_dir, found.save_root
        limits = track_limits(self.args, source)
        if not copy_files:
            if not isinstance(self.args.get("save_root"), str):
                raise ConfigError(f"{source}: missing required key: save_root")
            root_dir = (self._base_dir / str(self.args.get("root_file_path") or ".")).resolve()
            save_root = (root_dir / self.args["save_root"]).expanduser().resolve()
        config_root = save_root
        if parent is not None:
            save_root = Path(parent).expanduser().resolve()
        if seed is None:
            cfg_seed = self.args.get("seed")
            seed = cfg_seed if isinstance(cfg_seed, int) and not isinstance(cfg_seed, bool) else None
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        new = create_package_dir(
            self.args,
            root_dir=root_dir,
            save_root=save_root,
            name=override_name or None,
            no_save=no_save,
            copy_files=copy_files,
            loaded=self._loaded,
            description=description,
            seed=seed,
            also_skip=config_root if config_root != save_root else None,
        )
        manifest = Manifest.from_json(
            {**new.manifest_meta, "version": MANIFEST_VERSION, "checkpoints": {}, "next_ckpt_id": 0}
        )
        try:
            layout.ckpt_dir(new.path).mkdir()
            write_manifest(new.path, manifest)
        except BaseException:
            remove_tree(new.path)
            raise
        self.args, self.path, self._limits = new.args, new.path, limits
        self._manifest, self._tracks = manifest, manifest.tracks
        return new.path

    # ----------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path) -> SavePackage:
        """Open an existing package (also a DLNest package, whose manifest has no checkpoint records)."""
        pkg = cls()
        pkg._open(path)
        return pkg

    def _open(self, path: str | Path) -> None:
        p = Path(path).expanduser().resolve()
        if not layout.manifest_path(p).is_file() or not layout.args_path(p).is_file():
            raise PackageError(
                f"{p} is not a save package (it needs {layout.MANIFEST_FILE} and {layout.ARGS_FILE})"
            )
        args = load_json(layout.args_path(p))
        args["root_file_path"] = str(p)  # the package may have been moved since it was written
        limits = track_limits(args, str(layout.args_path(p)))
        manifest = read_manifest(p)
        with self._lock:
            self.args, self.path, self._base_dir, self._loaded = args, p, p, None
            self._limits, self._manifest, self._tracks = limits, manifest, manifest.tracks
            self._last_snapshot = None  # buffers of another package's state: not reused

    # ----------------------------------------------------------------------------------- manifest
    def _require_path(self) -> Path:
        if self.path is None:
            raise PackageError(
                "this SavePackage has no folder yet: call save_to_new_dir() or SavePackage.open()"
            )
        return self.path

    @property
    def prefix(self) -> str:
        """The checkpoint file prefix (DLNest's ``state_``, unless the manifest names another)."""
        return self._manifest.prefix

    @property
    def ckpt_dir(self) -> Path:
        return layout.ckpt_dir(self._require_path())

    def ckpt_path(self, ckpt_id: int) -> Path:
        return layout.ckpt_path(self._require_path(), ckpt_id, self.prefix)

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written (a frozen record: later writes replace it, never change it)."""
        with self._lock:
            return self._manifest

    @property
    def meta(self) -> dict[str, Any]:
        """Manifest metadata other than tracks and records (seed, versions, segments as dicts...); a copy."""
        with self._lock:
            return self._manifest.meta_json()

    @property
    def seed(self) -> int | None:
        return self._manifest.seed

    @property
    def tracks(self) -> TrackState:
        return self._tracks

    @property
    def records(self) -> dict[int, CheckpointRecord]:
        with self._lock:
            return dict(self._manifest.checkpoints or {})

    def _commit(self, manifest: Manifest) -> None:
        """Write ``manifest``, then make it this object's: a failed write changes nothing."""
        with self._lock:
            write_manifest(self._require_path(), manifest)
            self._manifest = manifest

    def update_meta(self, **changes: Any) -> None:
        """Merge top-level metadata keys into the manifest and write it (not the checkpoint keys, which
        only saving and :meth:`set_ckpt_id` change)."""
        refused = sorted(set(changes) & set(TRACK_KEYS))
        if refused:
            raise PackageError(f"update_meta cannot change {', '.join(refused)}: they record the checkpoints")
        with self._lock:
            self._commit(self._manifest.merged(changes))

    # ----------------------------------------------------------------------------------- segments
    def segments(self) -> list[Segment]:
        """The run segments, oldest first."""
        return list(self.manifest.segments)

    def segment_of(self, task_id: str) -> Segment | None:
        """The last segment a rank of queued task ``task_id`` recorded, or None (it never started)."""
        return self.manifest.segment_of(task_id)

    def begin_segment(self, info: Segment | Mapping[str, Any]) -> int:
        """Record the start of a run segment (train or resume); returns its index for ``end_segment``.

        ``info`` is a :class:`Segment` or its JSON form (the trainer's dict); ``started`` defaults to now.
        """
        segment = info if isinstance(info, Segment) else Segment.from_json(info)
        if segment.started is None:
            segment = replace(segment, started=time.time())
        with self._lock:
            segments = (*self._manifest.segments, segment)
            self._commit(replace(self._manifest, segments=segments))
            return len(segments) - 1

    def end_segment(self, index: int, **info: Any) -> None:
        """Record the end of segment ``index`` now: ``status``, ``finished_epoch``, ``error``,
        ``peak_gpu_mb`` (any other key is kept too)."""
        with self._lock:
            segments = list(self._manifest.segments)
            segments[index] = segments[index].merged({"ended": time.time(), **info})
            self._commit(replace(self._manifest, segments=tuple(segments)))

    # ----------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self,
        state_dict: Any,
        hold: bool = False,
        *,
        epoch: int | None = None,
        step: int | None = None,
        wait: bool = True,
        pin: bool = False,
    ) -> int:
        """Save ``state_dict`` as the next checkpoint and apply the track rules; returns its id. With
        ``pin`` it is kept until the next save whatever the tracks evict (a preempted run's checkpoint).

        With ``wait=False`` the state is snapshotted now and written by a background thread; call
        :meth:`flush` (or the next save) to wait for it and see any error.
        """
        self._require_path()
        assert self._limits is not None
        self._writer.wait()
        with self._lock:
            adm = admit(self._tracks, self._limits, hold=hold, pin=pin)
            self._tracks = adm.state
        # The previous snapshot's buffers are free (its write finished above): copy into them.
        snap = self._last_snapshot = snapshot(state_dict, self._last_snapshot)
        path = self.ckpt_path(adm.ckpt_id)
        ckpt_dir = self.ckpt_dir
        evicted = [self.ckpt_path(i) for i in adm.delete]

        def job() -> None:
            record = None
            if adm.ckpt_id not in adm.delete:  # a limit of 0 everywhere: admitted and evicted at once
                ckpt_dir.mkdir(exist_ok=True)
                nbytes, sha = write_file(path, snap)
                record = CheckpointRecord(
                    id=adm.ckpt_id, epoch=epoch, step=step, time=time.time(), bytes=nbytes, sha256=sha
                )
            with self._lock:
                records = dict(self._manifest.checkpoints or {})
                if record is not None:
                    records[adm.ckpt_id] = record
                for i in adm.delete:
                    records.pop(i, None)
                self._commit(replace(self._manifest.with_tracks(adm.state), checkpoints=records))
            for f in evicted:
                _unlink_if_there(f)

        def rollback() -> None:
            with self._lock:  # back to what the manifest says (the old state, or the new one when only
                self._tracks = self._manifest.tracks  # deleting an evicted file failed)

        self._writer.submit(job, on_error=rollback)
        if wait:
            self._writer.wait()
        return adm.ckpt_id

    def flush(self) -> None:
        """Wait until every submitted checkpoint is durable; raises if a write failed."""
        self._writer.wait()

    def checkpoint_ids(self) -> list[int]:
        """Ids the manifest records, ascending (not verified: see :meth:`latest_valid_id`)."""
        return sorted(self.records)

    def latest_valid_id(self) -> int | None:
        """The newest recorded checkpoint whose file exists with the recorded size and hash."""
        self.flush()
        for i, rec in sorted(self.records.items(), reverse=True):
            if file_matches(self.ckpt_path(i), rec):
                return i
        return None

    def resolve_ckpt_id(self, ckpt_id: int = -1) -> int:
        """``-1`` → latest valid id; otherwise check that ``ckpt_id`` is recorded and intact."""
        self.flush()
        if ckpt_id == -1:
            found = self.latest_valid_id()
            if found is None:
                raise CheckpointError(f"package {self.path} has no valid checkpoint to load")
            return found
        rec = self.records.get(ckpt_id)
        if rec is None:
            kept = ", ".join(map(str, self.checkpoint_ids())) or "none"
            raise CheckpointError(f"checkpoint {ckpt_id} is not kept in {self.path} (kept: {kept})")
        if not file_matches(self.ckpt_path(ckpt_id), rec):
            raise CheckpointError(f"checkpoint {ckpt_id} in {self.path} is damaged (size or sha256 differs)")
        return ckpt_id

    def state_dict(self, id: int = -1, device: str = "cpu") -> Any:
        """Load checkpoint ``id`` (``-1``: the latest valid one) onto ``device``."""
        if id != -1:
            return load_file(self.ckpt_path(self.resolve_ckpt_id(id)), device)
        self.flush()
        for i, rec in sorted(self.records.items(), reverse=True):
            path = self.ckpt_path(i)
            if not file_matches(path, rec):
                continue
            try:
                return load_file(path, device)
            except CheckpointError:
                if rec.sha256 is not None:
                    raise  # verified bytes that do not load: not a torn write, report it
                # adopted from DLNest without a hash: a torn file is only found by loading it
                log.warning("%s does not load; trying the checkpoint before it", path)
        raise CheckpointError(f"package {self.path} has no valid checkpoint to load")

    def set_ckpt_id(self, ckpt_id: int) -> None:
        """Continue from an older checkpoint: the next save gets ``ckpt_id``; ids >= it are forgotten
        and their files deleted, so a later default resume cannot load a stale file of the abandoned branch.
        """
        self.flush()
        with self._lock:
            new, dropped = truncate(self._tracks, ckpt_id)
            records = {i: r for i, r in (self._manifest.checkpoints or {}).items() if i < ckpt_id}
            self._commit(replace(self._manifest.with_tracks(new), checkpoints=records))
            self._tracks = new
        stale = set(dropped)
        for f in self.ckpt_dir.glob(layout.ckpt_glob(self.prefix)):
            parsed = layout.parse_ckpt_name(f.name)
            if parsed is not None and parsed[0] == self.prefix and parsed[1] >= ckpt_id:
                stale.add(parsed[1])
        for i in stale:
            _unlink_if_there(self.ckpt_path(i))

    def remove_temp_files(self) -> None:
        """Delete temp files of a writer killed mid-write (call only as the package's one writer)."""
        root = self._require_path()
        for f in [*self.ckpt_dir.glob(layout.TEMP_GLOB), *root.glob(layout.TEMP_GLOB)]:
            try:
                f.unlink()
            except FileNotFoundError:
                pass  # removed meanwhile: what was wanted
            except OSError as e:
                log.warning("cannot remove the temp file %s: %s", f, e)

    # ----------------------------------------------------------------------------------- files
    def output_path(self, rank: int | None = None) -> Path:
        return layout.output_path(self._require_path(), rank)

    def output_file(self, rank: int | None = None) -> IO[str]:
        """``_output.txt`` (or ``_output_<rank>.txt``) opened for appending, line-buffered."""
        return open(self.output_path(rank), "a", buffering=1, encoding="utf-8")

    def save_visual_string(self, s: str) -> Path:
        """Create an empty file named ``s`` at the package root, a marker seen in a file browser (DLNest's
        ``saveVisualString``, e.g. ``"desc: lr 3e-3"``); returns its path. ``s`` must be a plain file
        name, refused as a package name is (separators, ``..``, leading dot, empty) and refused when
        dlnest-ray uses that name itself; an existing file of that name is kept as it is."""
        name = validate_name(s)
        if layout.is_reserved(name):
            raise PackageError(f"{name!r} is a name the save package uses itself; choose another marker")
        target = self._require_path() / name
        try:
            target.touch(exist_ok=True)
        except OSError as e:
            raise PackageError(f"cannot create the marker file {target}: {e.strerror or e}") from None
        return target

    # ----------------------------------------------------------------------------------- DLNest names
    giveArgs = give_args
    saveToNewDir = save_to_new_dir
    getStateDict = state_dict
    setCkptID = set_ckpt_id
    saveVisualString = save_visual_string

    def saveACheckpoint(self, stateDict: Any, holdThisCheckpoint: bool = False) -> int:
        return self.save_checkpoint(stateDict, hold=holdThisCheckpoint)

    def initFromAnExistSavePackage(self, packagePath: str | Path) -> None:
        """Make this object the package at ``packagePath`` (DLNest's way to open one). A checkpoint this
        object is still writing is finished first; the object keeps its own lock and writer."""
        self.flush()
        self._open(packagePath)

    def getOutputFile(self, rank: int = -1) -> IO[str]:
        return self.output_file(None if rank < 0 else rank)

    def __repr__(self) -> str:
        return f"SavePackage({str(self.path) if self.path else 'unsaved'!r})"


def _unlink_if_there(path: Path) -> None:
    # An evicted or stale file already gone (a crash between manifest and delete): nothing to log.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
