"""The fast control path's wire: where the center's socket lives and how one message is read (shared by
the client, :mod:`.fastpath`, and the server, :mod:`.fastpath_server`, which must not import each other).
"""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import DlnestError

__all__ = ["MAX_LINE", "SOCKET_FILE", "read_line", "socket_path"]

SOCKET_FILE = "center.sock"
MAX_LINE = 64 * 1024 * 1024


def socket_path(home: Path) -> Path:
    return Path(home) / SOCKET_FILE


def read_line(sock: socket.socket) -> bytes:
    """One newline-terminated message from ``sock`` (without the newline); b"" when it closed first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_LINE:
            raise DlnestError("the fast path's message is too large")
