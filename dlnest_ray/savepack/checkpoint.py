"""Checkpoint file I/O: snapshot, atomic hashed write, verified load, and a one-deep background writer.

The training loop is blocked only while a checkpoint's state is *snapshotted* (tensors copied to CPU
memory, containers rebuilt, other values deep-copied). Serialising, hashing, fsync and the rename run
on one background thread, and at most one write is in flight: the next save first waits for the
previous one. A file becomes a checkpoint only when the manifest names it with its size and hash, and
the manifest is rewritten (atomically) only after the file is durable, so a crash at any point leaves
the previous checkpoint as the latest valid one.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import HashingWriter, atomic_write
from ..errors import CheckpointError
from .records import CheckpointRecord  # re-exported: its home was here

__all__ = ["CheckpointRecord", "CheckpointWriter", "file_matches", "load_file", "snapshot", "write_file"]

log = logging.getLogger(__name__)

_CHUNK = 4 << 20


def snapshot(obj: Any, reuse: Any = None) -> Any:
    """A deep copy of ``obj`` that later training cannot mutate: tensors are copied to CPU memory.

    ``reuse`` is an earlier snapshot no longer in use: tensors at the same place with the same shape
    and dtype are overwritten in place. Fresh large allocations are mapped lazily and every first touch
    of a page faults, which makes a clone several times slower than copying into warm memory.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if (
            isinstance(reuse, torch.Tensor)
            and reuse.device.type == "cpu"
            and reuse.shape == t.shape
            and reuse.dtype == t.dtype
            and reuse.layout == t.layout == torch.strided
            and reuse.is_contiguous()
            and reuse.data_ptr() != t.data_ptr()
        ):
            return reuse.copy_(t)
        return t.clone() if t.device.type == "cpu" else t.to("cpu")
    if isinstance(obj, dict):
        old = reuse if isinstance(reuse, dict) else {}
        items = [(k, snapshot(v, old.get(k))) for k, v in obj.items()]
        return type(obj)(items) if type(obj) in _DICT_TYPES else dict(items)
    if isinstance(obj, (list, tuple)):
        old_seq = reuse if isinstance(reuse, (list, tuple)) and len(reuse) == len(obj) else [None] * len(obj)
        values = [snapshot(v, r) for v, r in zip(obj, old_seq, strict=True)]
        if isinstance(obj, list):
            return values
        return type(obj)(*values) if hasattr(obj, "_fields") else tuple(values)
    if isinstance(obj, (int, float, str, bytes, bool, type(None))):
        return obj
    try:
        return copy.deepcopy(obj)
    except Exception as e:  # an object that cannot be copied is saved as it is at write time
        log.debug("%s cannot be deep-copied (%s); it is saved as it is when written", type(obj).__name__, e)
        return obj


def _dict_types() -> tuple[type, ...]:
    import collections

    return (dict, collections.OrderedDict)


_DICT_TYPES = _dict_types()


def write_file(path: Path, state: Any) -> tuple[int, str]:
    """Serialise ``state`` to ``path`` atomically and durably; return (bytes, sha256)."""
    import torch

    with atomic_write(path) as raw:
        w = HashingWriter(raw)
        torch.save(state, w)  # type: ignore[arg-type]  # torch.save accepts any object with write()
    return w.bytes, w.hexdigest()


def file_matches(path: Path, record: CheckpointRecord) -> bool:
    """True when ``path`` exists with the recorded size and (when recorded) sha256."""
    try:
        if path.stat().st_size != record.bytes:
            return False
        if record.sha256 is None:
            return True
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:  # missing or unreadable: not this checkpoint, and the caller tries an older one
        return False
    return h.hexdigest() == record.sha256


def load_file(path: Path, device: str = "cpu") -> Any:
    import torch

    try:
        # weights_only=False: checkpoints hold RNG states (numpy arrays) and the user's own save dicts;
        # the file was verified against the sha256 this package recorded when it wrote it.
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e


class CheckpointWriter:
    """Runs write jobs on one daemon thread, at most one at a time.

    ``submit`` waits for the previous job and re-raises its error, so a failed write is reported at the
    next save (or at ``wait``) instead of being lost.
    """

    def __init__(self, name: str = "dlnest-ckpt-writer") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None], *, on_error: Callable[[], None] | None = None) -> None:
        self.wait()

        def run() -> None:
            try:
                job()
            except BaseException as e:
                self._error = e
                if on_error is not None:
                    on_error()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        if err is not None:
            raise CheckpointError(f"writing a checkpoint failed: {type(err).__name__}: {err}") from err

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
