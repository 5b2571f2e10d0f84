"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees either the old file or the complete new one, never a prefix. Temp files are named
``.<name>.tmp-<random>`` so nothing that looks for ``<name>`` (or for ``*.ckpt``) ever picks them up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "HashingWriter",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "temp_path",
]


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """A binary file wrapper that counts and sha256-hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.bytes += view.nbytes
        return self._raw.write(view)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def atomic_write(target: Path, *, durable: bool = True, mode: int | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``target`` atomically when the block exits without error.

    ``mode`` (e.g. ``0o600``) is the new file's permission from its creation on, so a secret is never
    readable by others, not even for a moment. On error the temp file is removed and ``target`` is
    untouched.
    """
    target = Path(target)
    tmp = temp_path(target)
    created = False

    def opener(path: str, flags: int) -> int:
        # ``open`` owns the descriptor once this returns (it closes it if anything after fails)
        nonlocal created
        fd = os.open(path, flags, 0o666 if mode is None else mode)  # created with ``mode`` at once
        created = True
        if mode is not None:
            try:
                os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any beyond ``mode``
            except BaseException:
                os.close(fd)
                raise
        return fd

    try:
        f = open(tmp, "xb", opener=opener)  # noqa: SIM115 - closed below on every path
    except BaseException:
        if created:  # only ours: a name clash (``FileExistsError``) is someone else's file
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    try:
        yield f
        f.flush()
        if durable:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: Path, data: bytes, *, durable: bool = True, mode: int | None = None) -> None:
    with atomic_write(target, durable=durable, mode=mode) as f:
        f.write(data)


def atomic_write_json(
    target: Path,
    obj: Any,
    *,
    durable: bool = True,
    default: Callable[[Any], Any] | None = None,
    mode: int | None = None,
) -> None:
    text = json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False, default=default) + "\n"
    atomic_write_bytes(target, text.encode("utf-8"), durable=durable, mode=mode)
