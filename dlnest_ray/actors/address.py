"""Finding the Ray cluster and connecting to it: the one path used by the CLI and ``dlnest_ray.connect()``.

``--address``, else ``RAY_ADDRESS``, else the head ``dlnest-ray up`` started (``<home>/head.json``),
else the cluster the last ``ray start`` on this machine recorded. The GCS port is probed before
``ray.init`` (which keeps retrying a dead address for minutes), so "no cluster" is one quick line.
Import-light: Ray is imported inside functions only (the CLI imports this module at start-up).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from ..errors import DlnestError
from .auth import check_token_accepted, client_auth
from .home import default_home
from .names import NAMESPACE

__all__ = [
    "HEAD_FILE",
    "STARTED_BY",
    "init_ray",
    "quiet_sigterm",
    "reachable",
    "read_head",
    "recorded_address",
    "resolve_address",
    "state_home",
]

HEAD_FILE = "head.json"
STARTED_BY = "dlnest-ray"
PROBE_TIMEOUT_S = 3.0


def resolve_address(address: str | None, home: Path | None = None) -> str | None:
    """The cluster to use, as ``host:port`` (None: none known): ``--address``, else ``RAY_ADDRESS``, else
    the head ``dlnest-ray up`` started (``<home>/head.json``), else the one ``ray start`` last recorded."""
    addr = address or os.environ.get("RAY_ADDRESS") or None
    if addr == "local":
        raise DlnestError("--address local would start a throw-away cluster: run `dlnest-ray up` instead")
    if addr == "auto":
        addr = None
    if addr is not None and addr.startswith("ray://"):
        return addr  # Ray Client: passed through as given
    if addr is None:
        head = read_head(state_home(home))
        addr = str(head["address"]) if head and head.get("address") else recorded_address()
        if addr is None:
            return None
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise DlnestError(f"--address {addr!r} is not HOST:PORT")
    try:  # Ray's own spelling of the address (localhost becomes this node's IP, as the GCS sees it)
        from ray._private.services import canonicalize_bootstrap_address

        return str(canonicalize_bootstrap_address(addr))
    except (ImportError, AttributeError, ValueError):
        return addr


def ray_address_file() -> Path | None:
    """Where `ray start` records the last cluster it started (``$RAY_TMPDIR/ray/ray_current_cluster``)."""
    try:
        from ray._common.utils import get_ray_address_file

        return Path(get_ray_address_file(None))
    except (ImportError, AttributeError):
        return None


def recorded_address() -> str | None:
    """The cluster the last `ray start` on this machine recorded (what ``address="auto"`` prefers)."""
    path = ray_address_file()
    try:
        text = path.read_text(encoding="utf-8").strip() if path is not None else ""
    except OSError:
        return None
    return text or None


def reachable(address: str) -> bool:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def init_ray(address: str, home: Path | None = None) -> Any:
    """Connect this process to the cluster at ``address`` as a token-mode client when it has a token
    (:mod:`.auth`); returns Ray's context (None if connected already). A refused token is one line."""
    import ray

    if ray.is_initialized():
        return None
    token = client_auth(state_home(home))
    check_token_accepted(address, token)
    # ray.init replaces the SIGTERM handler with its own; a handler the user's program set is theirs
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        return ray.init(
            address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False
        )
    except ConnectionError as e:
        raise DlnestError(f"cannot connect to the Ray cluster at {address} ({e})") from None
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)


def quiet_sigterm() -> None:
    """For the CLI, after connecting: Ray's core installs a crash handler that prints a stack dump
    (``*** SIGTERM received ... PC: @``) when the process is terminated; a command told to stop
    (``kill``, a supervisor's timeout) should just exit, 128 + 15, as without Ray. Libraries' users
    (``dlnest_ray.connect()`` in a script or notebook) keep their own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def state_home(home: Path | None) -> Path:
    """The center's state folder: ``home``, else ``$DLNEST_RAY_HOME``, else ``~/.dlnest_ray``."""
    return (home.expanduser().resolve() if home else default_home()).resolve()


def read_head(home: Path) -> dict[str, Any] | None:
    """The head ``dlnest-ray up`` started, as recorded in ``<home>/head.json`` (None: none)."""
    path = home / HEAD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DlnestError(f"{path} is unreadable ({e}); remove it if no dlnest-ray head is running") from e
    return data if isinstance(data, dict) and data.get("started_by") == STARTED_BY else None
