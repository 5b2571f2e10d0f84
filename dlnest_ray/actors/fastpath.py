"""The fast control path's client: the center's operations over a local Unix socket, without Ray.

The center serves its operations on ``$DLNEST_RAY_HOME/center.sock`` (:mod:`.fastpath_server`), so a CLI
command on the head node reaches it in milliseconds instead of starting a Ray driver (import, connect,
disconnect: seconds). :class:`FastClient` is a :class:`~.client.Client` whose calls go over that socket;
every command's answers, messages and ``--json`` stay the same, because the same client methods run
and the records travel as their JSON forms.

Protocol: one request per connection — a JSON line ``{"op", "args", "kwargs"}`` — and one JSON line
back: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "...", "kind": "DlnestError"}``. Only
the socket's owner may connect: the file is 0600 and the server checks the peer's uid.

This module imports neither Ray nor torch.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DlnestError
from ..records import CenterState, DeviceInfo, SettingsInfo
from ..tasks import TaskRecord
from .analyzer_client import AnalyzerOps
from .calls import ActorUnavailable
from .client import READ_RETRY_S, Client
from .fastpath_wire import SOCKET_FILE, read_line, socket_path

__all__ = [
    "DISABLE_ENV",
    "SOCKET_FILE",
    "FastClient",
    "FastPathDown",
    "decode_result",
    "fast_client",
    "read_line",
    "socket_path",
]

DISABLE_ENV = "DLNEST_RAY_NO_FAST_PATH"  # set (to anything but "" or 0): always go through Ray
CALL_TIMEOUT_S = 600.0  # a submit copies the project; a poll waits at most a few seconds


class FastPathDown(DlnestError):
    """Nobody answers on the socket (no center, or it is restarting): the request was not sent."""


def _sweep_info() -> Any:
    """:class:`~dlnest_ray.sweeps.records.SweepInfo`, imported when a sweep is read (not by every CLI run)."""
    from ..sweeps.records import SweepInfo

    return SweepInfo


_DECODE: dict[str, Callable[[Any], Any]] = {
    "get_task_info": lambda rows: [TaskRecord.from_json(r) for r in rows],
    "get_devices_info": lambda rows: [DeviceInfo(**{**r, "tasks": tuple(r["tasks"])}) for r in rows],
    "get_settings": lambda d: SettingsInfo(**{**d, "disabled": tuple(d["disabled"])}),
    "center_state": lambda d: CenterState(**d),
    "get_sweep": lambda d: _sweep_info().from_json(d),
    "get_sweeps": lambda rows: [_sweep_info().from_json(r) for r in rows],
}


def decode_result(op: str, result: Any) -> Any:
    """The record(s) ``op`` returns, rebuilt from their JSON forms (the same types a Ray call returns)."""
    decode = _DECODE.get(op)
    return decode(result) if decode is not None else result


def _raise(answer: dict[str, Any]) -> None:
    kind = str(answer.get("kind") or "")
    message = str(answer.get("error") or "the center failed")
    cls = getattr(importlib.import_module("dlnest_ray.errors"), kind, None) if kind else None
    if kind == "ActorUnavailable":
        raise ActorUnavailable(message)
    if isinstance(cls, type) and issubclass(cls, DlnestError):
        raise cls(message)
    raise DlnestError(message)


class FastClient(Client):
    """A :class:`~.client.Client` over the center's socket (module doc). A call that could not be sent
    (the center restarts) is retried for up to :data:`~.client.READ_RETRY_S`: it never ran."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.center = None
        self.analyzers = FastAnalyzerOps(self)

    def call(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """``op`` at the center with these arguments; its result (decoded) or its DlnestError."""
        request = json.dumps({"op": op, "args": list(args), "kwargs": kwargs}, default=str).encode() + b"\n"
        deadline = time.monotonic() + READ_RETRY_S
        while True:
            try:
                answer = self._send(request)
                break
            except FastPathDown:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.25)
        if not answer.get("ok"):
            _raise(answer)
        return decode_result(op, answer.get("result"))

    def _send(self, request: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CALL_TIMEOUT_S)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise FastPathDown(f"the center does not answer on {self.path} ({type(e).__name__})") from e
            except PermissionError as e:
                raise DlnestError(
                    f"{self.path} belongs to another user: dlnest-ray there is not yours"
                ) from e
            sock.sendall(request)
            line = read_line(sock)
        if not line:
            raise DlnestError("the center closed the connection without an answer (see `dlnest-ray log`)")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise DlnestError("the center's answer on the fast path is not an object")
        return answer

    def _read(self, name: str, /, **kwargs: Any) -> Any:
        return self.call(name, **kwargs)

    def _change(self, name: str, /, **kwargs: Any) -> Any:
        return self.call(name, **kwargs)

    def ping(self) -> bool:
        return bool(self.call("ping") == "ok")


class FastAnalyzerOps(AnalyzerOps):
    """The analyzer operations through the center's socket: the center calls the analyzer actor."""

    def __init__(self, client: FastClient) -> None:
        super().__init__(client.task)
        self.client = client
        self.keep_handles = False  # ask the center each time: a preempted analyzer is waited for again

    def _find(self, task_id: str) -> Any:
        """``task_id`` (what the center's ``analyzer_call`` takes) when its analyzer actor runs, else None."""
        return task_id if self.client.call("analyzer_alive", task_id) else None

    def _acall(self, task_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.client.call("analyzer_call", task_id, method, list(args), kwargs)


def fast_client(home: Path) -> FastClient | None:
    """A client over ``home``'s center socket when one answers, else None (use Ray)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    path = socket_path(home)
    if not path.exists():
        return None
    client = FastClient(path)
    try:
        client._send(b'{"op": "ping", "args": [], "kwargs": {}}\n')
    except (FastPathDown, DlnestError, OSError, ValueError):
        return None
    return client
