"""Running cluster commands in child processes, a gated test project, and process checks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli.helpers import Cli
from tests.projects import write_project

__all__ = [
    "cli",
    "free_port",
    "gated_project",
    "json_out",
    "port_open",
    "ray_tasks",
    "session_pids",
    "wait_for",
]

# Appended to a test project's LifeCycle.py: before each epoch, print a line and wait until the file
# named by the config key ``gate_file`` exists (or the run is asked to stop, or 90 s pass). Runs stay
# RUNNING, deterministically, for as long as a test needs.
GATE = """

import time as _gate_time
from pathlib import Path as _GatePath

_ungated_before_one_epoch = LifeCycle.before_one_epoch


def _gated_before_one_epoch(self):
    gate = self.args.get("gate_file")
    if gate and not os.path.exists(gate):
        print("waiting at the gate", flush=True)
        deadline = _gate_time.time() + 90
        while not os.path.exists(gate) and _gate_time.time() < deadline:
            if any(_GatePath(".dlnest_run").glob("*.stop")):  # cancel requested: go on and be stopped
                break
            _gate_time.sleep(0.1)
    return _ungated_before_one_epoch(self)


LifeCycle.before_one_epoch = _gated_before_one_epoch
"""


def cli(*args: object, env: dict[str, str] | None = None, timeout: float = 120) -> Cli:
    """``python -m dlnest_ray ARGS`` with ``RAY_ADDRESS`` unset unless ``env`` sets it."""
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full.setdefault("OMP_NUM_THREADS", "2")
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", *map(str, args)],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Cli(proc.returncode, proc.stdout, proc.stderr)


def json_out(result: Cli) -> Any:
    assert result.returncode == 0, str(result)
    return json.loads(result.stdout)


def gated_project(folder: Path, gate: Path, *, epochs: int = 1) -> Path:
    """A small project whose runs wait before each epoch until ``gate`` exists; returns its config."""
    config = write_project(folder, epochs=epochs, extra={"gate_file": str(gate)}, n_train=64, n_val=32)
    with open(folder / "LifeCycle.py", "a", encoding="utf-8") as f:
        f.write(GATE)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def session_pids(sid: int) -> list[int]:
    """Processes in session ``sid`` (a head started by ``up`` runs in its own session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
    return pids


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


_RAY_TASKS = """
import json, sys
from dlnest_ray.actors.auth import client_auth
from dlnest_ray.actors.store import default_home
client_auth(default_home())
from ray.util.state import list_tasks
rows = list_tasks(address=sys.argv[1], limit=10000, detail=True, raise_on_missing_output=False)
print(json.dumps([[t.name, t.state, t.error_type or "", t.error_message or ""] for t in rows]))
"""


def ray_tasks(address: str, env: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Every task Ray's state API knows on the cluster at ``address``: (name, state, error type, error
    message) — what `ray list tasks` and the dashboard show. Asked from a process of its own."""
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_TASKS, address], env=full, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [tuple(row) for row in json.loads(proc.stdout.splitlines()[-1])]  # type: ignore[misc]
