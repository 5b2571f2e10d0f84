"""The save package: one run's folder, and the ``SavePackage`` API that works without Ray or a GPU.

``_package.json`` is the single source of truth for which checkpoints exist. It is written atomically,
after a checkpoint file is durable and *before* evicted files are deleted. A checkpoint file that the
manifest does not name, or whose size or sha256 differs from the record, is never loaded as "latest".
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..atomic import atomic_write_json
from ..config import LoadedConfig, load_config, load_json, resolve_layout
from ..errors import CheckpointError, ConfigError, PackageError
from .checkpoint import CheckpointRecord, CheckpointWriter, file_matches, load_file, snapshot, write_file
from .create import create_package_dir
from .tracks import TrackLimits, TrackState, admit, truncate

__all__ = ["MANIFEST", "MANIFEST_VERSION", "SavePackage"]

MANIFEST = "_package.json"
ARGS = "args.json"
CKPT_DIR = "Checkpoints"
MANIFEST_VERSION = 1
_CKPT_RE = re.compile(r"^(?P<prefix>.*?)(?P<id>\d+)\.ckpt$")


def _limits(args: Mapping[str, Any], source: str) -> TrackLimits:
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


class SavePackage:
    """One run's save package.

    Standalone use (DLNest's "use the save package alone")::

        pkg = SavePackage("root_config.json")          # or SavePackage(); pkg.give_args({...})
        pkg.save_to_new_dir()                           # copy_files=False when there is no code to copy
        pkg.save_checkpoint(state, hold=False)
        pkg = SavePackage.open(path); pkg.state_dict()  # latest valid checkpoint

    Checkpoint ids count saves from 0. Only one process may write a package at a time (rank 0).
    """

    def __init__(self, config_path: str | Path = "", freq_path: str | Path = "") -> None:
        self.args: dict[str, Any] = {}
        self.path: Path | None = None
        self._loaded: LoadedConfig | None = None
        self._base_dir = Path.cwd()
        self._meta: dict[str, Any] = {}
        self._tracks = TrackState()  # reserved: includes a save still being written
        self._committed_tracks = TrackState()  # what the manifest on disk says
        self._limits: TrackLimits | None = None
        self._records: dict[int, CheckpointRecord] = {}
        self.prefix = "state_"
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

    def save_to_new_dir(
        self,
        override_name: str = "",
        copy_files: bool = True,
        *,
        no_save: bool = False,
        description: str = "",
        seed: int | None = None,
    ) -> Path:
        """Create the package folder under ``save_root`` and return its path.

        ``override_name`` names the folder (validated; an existing folder is an error, never overwritten);
        otherwise ``YYYY-mm-dd_HH-MM-SS_<3 digits>``, or ``NOSAVE_<timestamp>`` with ``no_save``.
        """
        if self.path is not None:
            raise PackageError(f"this SavePackage already has a folder: {self.path}")
        source = str(self._loaded.root_config) if self._loaded else "config"
        if copy_files:  # first: it lists every missing key at once
            layout = resolve_layout(self.args, self._base_dir, source=source)
            root_dir, save_root = layout.root_dir, layout.save_root
        limits = _limits(self.args, source)
        if not copy_files:
            if not isinstance(self.args.get("save_root"), str):
                raise ConfigError(f"{source}: missing required key: save_root")
            root_dir = (self._base_dir / str(self.args.get("root_file_path") or ".")).resolve()
            save_root = (root_dir / self.args["save_root"]).expanduser().resolve()
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
        )
        self.args, self.path, self._meta = new.args, new.path, new.manifest_meta
        self._meta["segments"] = []
        self._limits = limits
        try:
            (new.path / CKPT_DIR).mkdir()
            self._write_manifest()
        except BaseException:
            shutil.rmtree(new.path, ignore_errors=True)
            self.path = None
            raise
        return new.path

    # ----------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path) -> SavePackage:
        """Open an existing package (also a DLNest package, whose manifest has no checkpoint records)."""
        p = Path(path).expanduser().resolve()
        if not (p / MANIFEST).is_file() or not (p / ARGS).is_file():
            raise PackageError(f"{p} is not a save package (it needs {MANIFEST} and {ARGS})")
        pkg = cls()
        raw = load_json(p / MANIFEST)
        args = load_json(p / ARGS)
        args["root_file_path"] = str(p)  # the package may have been moved since it was written
        pkg.args, pkg.path, pkg._base_dir = args, p, p
        pkg._limits = _limits(args, str(p / ARGS))
        pkg._load_manifest(raw)
        return pkg

    def _load_manifest(self, raw: dict[str, Any]) -> None:
        assert self.path is not None
        self.prefix = str(raw.get("prefix", "state_"))
        fast, slow, cons = (
            tuple(int(i) for i in raw.get(k, [])) for k in ("ckpt_fast", "ckpt_slow", "ckpt_consistent")
        )
        known = {
            "prefix",
            "ckpt_fast",
            "ckpt_slow",
            "ckpt_consistent",
            "checkpoints",
            "next_ckpt_id",
            "version",
        }
        self._meta = {k: v for k, v in raw.items() if k not in known}
        self._meta.setdefault("segments", [])
        if "checkpoints" in raw:
            self._records = {
                int(k): CheckpointRecord.from_json(int(k), v) for k, v in raw["checkpoints"].items()
            }
            next_id = int(raw.get("next_ckpt_id", max(self._records, default=-1) + 1))
        else:  # a DLNest package: adopt the tracked files that exist, without hashes
            self._records = {}
            for i in sorted(set(fast) | set(slow) | set(cons)):
                f = self.ckpt_path(i)
                if f.is_file():
                    self._records[i] = CheckpointRecord(
                        id=i,
                        epoch=None,
                        step=None,
                        time=f.stat().st_mtime,
                        bytes=f.stat().st_size,
                        sha256=None,
                    )
            on_disk = [int(m["id"]) for f in self.ckpt_dir.glob("*.ckpt") if (m := _CKPT_RE.match(f.name))]
            next_id = max([*on_disk, *self._records], default=-1) + 1
        self._tracks = self._committed_tracks = TrackState(
            fast=fast, slow=slow, consistent=cons, next_id=next_id
        )

    # ----------------------------------------------------------------------------------- manifest
    def _require_path(self) -> Path:
        if self.path is None:
            raise PackageError(
                "this SavePackage has no folder yet: call save_to_new_dir() or SavePackage.open()"
            )
        return self.path

    @property
    def ckpt_dir(self) -> Path:
        return self._require_path() / CKPT_DIR

    def ckpt_path(self, ckpt_id: int) -> Path:
        return self.ckpt_dir / f"{self.prefix}{ckpt_id}.ckpt"

    @property
    def meta(self) -> dict[str, Any]:
        """Manifest metadata other than tracks and records (seed, versions, segments, ...); a copy."""
        with self._lock:
            return dict(self._meta)

    @property
    def seed(self) -> int | None:
        s = self._meta.get("seed")
        return s if isinstance(s, int) else None

    @property
    def tracks(self) -> TrackState:
        return self._tracks

    @property
    def records(self) -> dict[int, CheckpointRecord]:
        with self._lock:
            return dict(self._records)

    def _manifest(self) -> dict[str, Any]:
        return {
            **self._meta,
            "version": MANIFEST_VERSION,
            "prefix": self.prefix,
            "ckpt_fast": list(self._committed_tracks.fast),
            "ckpt_slow": list(self._committed_tracks.slow),
            "ckpt_consistent": list(self._committed_tracks.consistent),
            "next_ckpt_id": self._committed_tracks.next_id,
            "checkpoints": {str(i): r.to_json() for i, r in sorted(self._records.items())},
        }

    def _write_manifest(self) -> None:
        with self._lock:
            atomic_write_json(self._require_path() / MANIFEST, self._manifest())

    def update_meta(self, **changes: Any) -> None:
        """Merge top-level metadata keys into the manifest and write it."""
        with self._lock:
            self._meta.update(changes)
            self._write_manifest()

    def begin_segment(self, info: Mapping[str, Any]) -> int:
        """Record the start of a run segment (train or resume); returns its index for ``end_segment``."""
        with self._lock:
            segs = list(self._meta.get("segments", []))
            segs.append({"started": time.time(), **info})
            self._meta["segments"] = segs
            self._write_manifest()
            return len(segs) - 1

    def end_segment(self, index: int, **info: Any) -> None:
        with self._lock:
            segs = list(self._meta.get("segments", []))
            segs[index] = {**segs[index], "ended": time.time(), **info}
            self._meta["segments"] = segs
            self._write_manifest()

    # ----------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self,
        state_dict: Any,
        hold: bool = False,
        *,
        epoch: int | None = None,
        step: int | None = None,
        wait: bool = True,
    ) -> int:
        """Save ``state_dict`` as the next checkpoint and apply the track rules; returns its id.

        With ``wait=False`` the state is snapshotted now and written by a background thread; call
        :meth:`flush` (or the next save) to wait for it and see any error.
        """
        self._require_path()
        assert self._limits is not None
        self._writer.wait()
        with self._lock:
            committed = self._tracks
            adm = admit(committed, self._limits, hold=hold)
            self._tracks = adm.state
        # The previous snapshot's buffers are free (its write finished above): copy into them.
        snap = self._last_snapshot = snapshot(state_dict, self._last_snapshot)
        path = self.ckpt_path(adm.ckpt_id)
        ckpt_dir = self.ckpt_dir

        def job() -> None:
            record = None
            if adm.ckpt_id not in adm.delete:  # a limit of 0 everywhere: admitted and evicted at once
                ckpt_dir.mkdir(exist_ok=True)
                nbytes, sha = write_file(path, snap)
                record = CheckpointRecord(
                    id=adm.ckpt_id, epoch=epoch, step=step, time=time.time(), bytes=nbytes, sha256=sha
                )
            with self._lock:
                if record is not None:
                    self._records[adm.ckpt_id] = record
                for i in adm.delete:
                    self._records.pop(i, None)
                self._committed_tracks = adm.state
                self._write_manifest()
            for i in adm.delete:
                with contextlib.suppress(FileNotFoundError):
                    self.ckpt_path(i).unlink()

        def rollback() -> None:
            with self._lock:
                self._tracks = committed
                self._committed_tracks = committed

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
        raise CheckpointError(f"package {self.path} has no valid checkpoint to load")

    def set_ckpt_id(self, ckpt_id: int) -> None:
        """Continue from an older checkpoint: the next save gets ``ckpt_id``; ids >= it are forgotten
        and their files deleted, so a later default resume cannot load a stale file of the abandoned branch.
        """
        self.flush()
        with self._lock:
            new, dropped = truncate(self._tracks, ckpt_id)
            self._tracks = self._committed_tracks = new
            for i in list(self._records):
                if i >= ckpt_id:
                    self._records.pop(i)
            self._write_manifest()
        stale = set(dropped)
        for f in self.ckpt_dir.glob(f"{self.prefix}*.ckpt"):
            m = _CKPT_RE.match(f.name)
            if m and m["prefix"] == self.prefix and int(m["id"]) >= ckpt_id:
                stale.add(int(m["id"]))
        for i in stale:
            with contextlib.suppress(FileNotFoundError):
                self.ckpt_path(i).unlink()

    def remove_temp_files(self) -> None:
        """Delete temp files of a writer killed mid-write (call only as the package's one writer)."""
        for f in [*self.ckpt_dir.glob(".*.tmp-*"), *self._require_path().glob(".*.tmp-*")]:
            with contextlib.suppress(OSError):
                f.unlink()

    # ----------------------------------------------------------------------------------- output
    def output_path(self, rank: int | None = None) -> Path:
        name = "_output.txt" if rank is None or rank < 0 else f"_output_{rank}.txt"
        return self._require_path() / name

    def output_file(self, rank: int | None = None) -> IO[str]:
        """``_output.txt`` (or ``_output_<rank>.txt``) opened for appending, line-buffered."""
        return open(self.output_path(rank), "a", buffering=1, encoding="utf-8")

    # ----------------------------------------------------------------------------------- DLNest names
    giveArgs = give_args
    saveToNewDir = save_to_new_dir
    getStateDict = state_dict
    setCkptID = set_ckpt_id

    def saveACheckpoint(self, stateDict: Any, holdThisCheckpoint: bool = False) -> int:
        return self.save_checkpoint(stateDict, hold=holdThisCheckpoint)

    def initFromAnExistSavePackage(self, packagePath: str | Path) -> None:
        other = SavePackage.open(packagePath)
        self.__dict__.update(other.__dict__)

    def getOutputFile(self, rank: int = -1) -> IO[str]:
        return self.output_file(None if rank < 0 else rank)

    def __repr__(self) -> str:
        return f"SavePackage({str(self.path) if self.path else 'unsaved'!r})"
