"""The fast control path's server: the center's operations on a local Unix socket (see :mod:`.fastpath`).

It runs inside the center (a thread per connection) and calls the center's own methods, so an answer
is exactly what a Ray call returns, in JSON. Only the operations in :data:`OPS` are served — the ones
the CLI and the shell use — plus ``analyzer_alive``/``analyzer_call``, which the center forwards to an
analyzer actor (``exp``, ``watch A_…``).

Who may connect: the socket file is created 0600 (the umask is set around ``bind``, so there is no
moment when it is open to others), and every connection's peer credentials (``SO_PEERCRED``) must
show the center's own uid; another user's connection is answered with an error and closed. The file is
replaced when a center (re)starts and removed when it stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import DlnestError
from .fastpath_wire import read_line, socket_path

__all__ = ["OPS", "FastPathServer", "peer_uid", "to_wire"]

log = logging.getLogger(__name__)

OPS = frozenset(
    {
        "ping",
        "get_task_info",
        "task_rows",
        "get_devices_info",
        "get_settings",
        "center_state",
        "get_dlnest_output",
        "owner_job",
        "del_task",
        "run_train",
        "continue_train",
        "analyze",
        "sweep",
        "get_sweep",
        "get_sweeps",
        "clear",
        "change_devices",
        "change_delay",
        "change_max_task_per_device",
        "change_margin",
        "change_retries",
        "change_notify_webhook",
        "drain",
        "open_queue",
    }
)
AnalyzerCall = Callable[[str, str, list[Any], dict[str, Any]], Any]


def to_wire(value: Any) -> Any:
    """``value`` as JSON: a record by its ``to_json()`` (else its fields), tuples as lists."""
    if hasattr(value, "to_json") and callable(value.to_json):
        return to_wire(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(dataclasses.asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    return value


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket; None where the OS cannot tell."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    target: Any
    analyzer_call: AnalyzerCall | None
    analyzer_alive: Callable[[str], bool] | None


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            line = read_line(sock)  # read first (bounded), so the answer below always reaches the client
        except (OSError, DlnestError) as e:
            log.info("fast path: unreadable request: %s", e)
            return
        uid = peer_uid(sock)
        if uid is not None and uid != os.getuid():
            log.warning("fast path: refused a connection from uid %d", uid)
            self._answer(
                {"ok": False, "error": "this dlnest-ray belongs to another user", "kind": "DlnestError"}
            )
            return
        try:
            request = json.loads(line or b"null")
            op, args, kwargs = (
                request["op"],
                list(request.get("args") or []),
                dict(request.get("kwargs") or {}),
            )
        except (ValueError, TypeError, KeyError) as e:
            self._answer({"ok": False, "error": f"bad request on the fast path: {e}", "kind": "DlnestError"})
            return
        self._answer(self._run(str(op), args, kwargs))

    def _run(self, op: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        srv = self.server
        try:
            if op == "analyzer_alive" and srv.analyzer_alive is not None:
                result: Any = srv.analyzer_alive(str(args[0]))
            elif op == "analyzer_call" and srv.analyzer_call is not None:
                result = srv.analyzer_call(str(args[0]), str(args[1]), list(args[2]), dict(args[3]))
            elif op == "ping":
                result = "ok"
            elif op in OPS and hasattr(srv.target, op):
                result = getattr(srv.target, op)(*args, **kwargs)
            else:
                return {"ok": False, "error": f"the center does not serve {op!r} here", "kind": "DlnestError"}
            return {"ok": True, "result": to_wire(result)}
        except DlnestError as e:
            return {"ok": False, "error": str(e), "kind": type(e).__name__}
        except Exception as e:  # a bug, or a Ray error reaching an analyzer: said, and logged in full
            log.exception("fast path: %s failed", op)
            return {
                "ok": False,
                "error": f"the center failed: {type(e).__name__}: {e}",
                "kind": "DlnestError",
            }

    def _answer(self, answer: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the client went away: nothing to tell
            self.request.sendall(json.dumps(answer, default=str).encode() + b"\n")


class FastPathServer:
    """Serves ``target``'s operations (:data:`OPS`) on ``<home>/center.sock`` from a daemon thread."""

    def __init__(
        self,
        target: Any,
        home: Path,
        *,
        analyzer_call: AnalyzerCall | None = None,
        analyzer_alive: Callable[[str], bool] | None = None,
    ) -> None:
        self.path = socket_path(home)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a center that went away left it: connecting there is refused anyway
        old = os.umask(0o177)  # created 0600: never open to others, not even for a moment
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino  # close() removes the file only if it is still this one
        self._server.target = target
        self._server.analyzer_call = analyzer_call
        self._server.analyzer_alive = analyzer_alive
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dlnest-fastpath", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and remove the socket file (only if it is still this server's)."""
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
