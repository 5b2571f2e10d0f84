"""The center's persistent state: the queue, the history, settings and the id counter.

One JSON file, ``<home>/center.json``, rewritten atomically on every change, so a center that is
killed and restarted (Ray restarts it: ``max_restarts=-1``) loses no pending task. The center's own
messages (DLNest's "DLNest output") go to a bounded in-memory buffer with monotonically increasing
offsets and are appended to ``<home>/center.log``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_json
from ..errors import DlnestError
from ..linebuffer import LineBuffer
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


LogBuffer = LineBuffer  # the center's messages: stamped lines, appended to center.log
