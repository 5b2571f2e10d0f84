"""The center's persistent state: the queue, the history, settings and the id counter.

One JSON file, ``<home>/center.json``, rewritten atomically on every change, so a center that is
killed and restarted (Ray restarts it: ``max_restarts=-1``) loses no pending task. The center's own
messages (DLNest's "DLNest output") go to a bounded in-memory buffer with monotonically increasing
offsets and are appended to ``<home>/center.log``.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import DlnestError
from ..tasks import TaskKind, TaskRecord

__all__ = ["HOME_ENV", "CenterSettings", "CenterStore", "LogBuffer", "default_home"]

HOME_ENV = "DLNEST_RAY_HOME"
STATE_FILE = "center.json"
STATE_VERSION = 1


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".dlnest_ray").expanduser().resolve()


@dataclass(kw_only=True)
class CenterSettings:
    delay_s: float = 60.0  # scheduling interval, and how long a launch's memory counts as "not yet allocated"
    max_tasks_per_device: int = 10_000
    starvation_s: float = 3600.0
    disabled: list[str] = field(default_factory=list)  # "node:gpuN" labels


class CenterStore:
    """Load and save the center's state; the records live in ``tasks`` (submit order)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / STATE_FILE
        self.settings = CenterSettings()
        self.tasks: dict[str, TaskRecord] = {}
        self.next_id = 1
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self.next_id = int(raw["next_id"])
            self.settings = CenterSettings(**raw.get("settings", {}))
            self.tasks = {r["task_id"]: TaskRecord.from_json(r) for r in raw.get("tasks", [])}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DlnestError(
                f"the center's state file {self.path} is unreadable ({type(e).__name__}: {e}); "
                "move it away to start with an empty queue"
            ) from e

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "next_id": self.next_id,
                "settings": asdict(self.settings),
                "tasks": [r.to_json() for r in self.tasks.values()],
            },
        )

    def new_id(self, kind: TaskKind) -> str:
        task_id = f"{kind.value}_{self.next_id:04d}"
        self.next_id += 1
        return task_id


class LogBuffer:
    """Bounded lines with global offsets: a reader asking from a dropped offset is told what it missed."""

    def __init__(self, path: Path | None = None, max_lines: int = 10_000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self.start = 0  # offset of the oldest line kept
        self.path = path

    @property
    def end(self) -> int:
        return self.start + len(self._lines)

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in message.splitlines() or [""]:
            if len(self._lines) == self._lines.maxlen:
                self.start += 1
            self._lines.append(f"[{stamp}] {line}")
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(f"[{stamp}] {line}\n")

    def read(self, offset: int = 0) -> dict[str, Any]:
        """Lines from ``offset`` on, as ``{"offset", "end", "missed", "lines"}``: ``offset`` is the first
        line returned, ``end`` the offset to ask from next, ``missed`` how many were dropped unread."""
        missed = max(0, self.start - offset)
        first = max(offset, self.start)
        lines = list(self._lines)[first - self.start :] if first < self.end else []
        return {"offset": first, "end": self.end, "missed": missed, "lines": lines}

    def clear(self) -> None:
        self.start = self.end
        self._lines.clear()
