"""The center's persistent state: the queue, the history, settings and the id counter.

One JSON file, ``<home>/center.json``, rewritten atomically on every change, so a center that is
killed and restarted (Ray restarts it: ``max_restarts=-1``) loses no pending task. It also says whether
``down`` is draining the center (nothing launches meanwhile). The center's own messages (DLNest's
"DLNest output") go to a bounded in-memory buffer with monotonically increasing offsets and are
appended to ``<home>/center.log``; a new center starts with that file's last lines, so the log, like
the queue, survives ``down``/``up``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_json
from ..errors import DlnestError
from ..linebuffer import LineBuffer
from ..scheduling.specs import DEFAULT_MARGIN
from ..sweeps.records import SWEEP_PREFIX, SweepRecord
from ..tasks import TaskKind, TaskRecord
from .auth import ensure_private_home
from .home import HOME_ENV, default_home

__all__ = [
    "HOME_ENV",
    "LOG_FILE",
    "CenterSettings",
    "CenterStore",
    "EnvStore",
    "LogBuffer",
    "default_home",
    "tail_lines",
]

STATE_FILE = "center.json"
STATE_VERSION = 1


@dataclass(kw_only=True)
class CenterSettings:
    delay_s: float = 60.0  # scheduling interval, and how long a launch's memory counts as "not yet allocated"
    max_tasks_per_device: int = 10_000
    starvation_s: float = 3600.0
    margin: float = DEFAULT_MARGIN  # right-sized reservation = measured peak × margin
    retries: int = 2  # a run's retries when neither --retries nor its config's `retries` says (issue 14)
    disabled: list[str] = field(default_factory=list)  # "node:gpuN" labels


class CenterStore:
    """Load and save the center's state; the records live in ``tasks`` (submit order), the sweeps in
    ``sweeps`` (``S_0001``..., counted apart from the tasks; a state file from before sweeps has none)."""

    def __init__(self, home: Path) -> None:
        self.home = ensure_private_home(Path(home))
        self.path = self.home / STATE_FILE
        self.settings = CenterSettings()
        self.tasks: dict[str, TaskRecord] = {}
        self.sweeps: dict[str, SweepRecord] = {}
        self.next_id = 1
        self.next_sweep_id = 1
        self.draining = False  # `down` has begun: nothing launches until the next `up`
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.next_id = int(raw["next_id"])
            self.settings = CenterSettings(**raw.get("settings", {}))
            self.draining = bool(raw.get("draining", False))
            self.tasks = {r["task_id"]: TaskRecord.from_json(r) for r in raw.get("tasks", [])}
            self.next_sweep_id = int(raw.get("next_sweep_id", 1))
            self.sweeps = {s["sweep_id"]: SweepRecord.from_json(s) for s in raw.get("sweeps", [])}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DlnestError(
                f"the center's state file {self.path} is unreadable ({type(e).__name__}: {e}); "
                "move it away to start with an empty queue"
            ) from e

    def save(self) -> None:
        atomic_write_json(  # 0600: the queue names every package and project of its user
            self.path,
            {
                "version": STATE_VERSION,
                "next_id": self.next_id,
                "settings": asdict(self.settings),
                "draining": self.draining,
                "tasks": [r.to_json() for r in self.tasks.values()],
                "next_sweep_id": self.next_sweep_id,
                "sweeps": [s.to_json() for s in self.sweeps.values()],
            },
            mode=0o600,
        )

    def new_id(self, kind: TaskKind) -> str:
        task_id = f"{kind.value}_{self.next_id:04d}"
        self.next_id += 1
        return task_id

    def new_sweep_id(self) -> str:
        sweep_id = f"{SWEEP_PREFIX}{self.next_sweep_id:04d}"
        self.next_sweep_id += 1
        return sweep_id


LOG_FILE = "center.log"
ENV_DIR = "env"


class EnvStore:
    """Each task's environment (see :mod:`dlnest_ray.runenv`): ``<home>/env/<task id>.json``, the
    folder 0700 and the files 0600, written when the task is queued and removed when it ends. Kept
    apart from ``center.json`` so that nothing that lists tasks ever holds a value."""

    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / ENV_DIR

    def put(self, task_id: str, env: Mapping[str, str]) -> None:
        if not env:
            return
        ensure_private_home(self.folder)
        atomic_write_json(self.folder / f"{task_id}.json", dict(env), mode=0o600)

    def get(self, task_id: str) -> dict[str, str]:
        try:
            raw = json.loads((self.folder / f"{task_id}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise DlnestError(f"the environment of {task_id} is unreadable ({e}); resubmit it") from e
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def drop(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{task_id}.json").unlink()


class LogBuffer(LineBuffer):
    """The center's messages: stamped lines, appended to ``center.log``. A new buffer starts with the
    file's last lines (a restarted center or the next ``up`` shows what came before); ``clear`` also
    moves the file aside to ``center.log.1``, so a cleared log stays cleared after a restart."""

    def __init__(self, path: Path | None = None, max_lines: int = 10_000) -> None:
        super().__init__(path, max_lines)
        if path is not None:
            self.preload(tail_lines(path, max_lines))

    def clear(self) -> None:
        with self._cond:
            super().clear()
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))


def tail_lines(path: Path, n: int, block: int = 1 << 16) -> list[str]:
    """The last ``n`` lines of ``path`` (none when it does not exist), read from the end in blocks."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            data = b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:] if n > 0 else []
