"""Which dlnest-ray code a process runs: a digest of the package's Python source.

The center keeps the digest of the code it started with; a client through Ray compares it with its own.
They differ when the cluster was started before dlnest-ray was upgraded or edited (an editable install
after a ``git pull``): Ray then cannot load the center's class in the client, and calls may fail, so the
CLI says to restart the cluster (``down``, then ``up``). Hashing the ~120 files takes ~5 ms: it is done
on the Ray path only (which takes seconds anyway), never on the CLI's fast path.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = ["SKEW_MESSAGE", "code_id"]

SKEW_MESSAGE = (
    "the cluster's center runs other dlnest-ray code than this command (it was started before dlnest-ray "
    "was upgraded or edited), so some commands may fail: run `dlnest-ray down`, then `dlnest-ray up`, to "
    "restart it with this code"
)


@functools.cache
def code_id() -> str:
    """The first 16 hex digits of a SHA-256 over the package's ``.py`` files (their paths and bytes)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
