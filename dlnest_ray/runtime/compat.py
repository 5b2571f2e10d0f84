"""DLNest's ``LifeCycle.taskProcess``, as a read-only view of the running trainer.

DLNest handed the life cycle its ``TaskProcess`` (the process running the task) and real code reads
it: ``self.taskProcess.task.args``, ``self.taskProcess.finishedEpoch``, ``self.taskProcess.logDict``.
Its meaningful part is kept — what the run is and where it stands — as plain reads; the process
machinery (DLNest's command queue, ``initOutput``, ``saveCkpt``...) is not: dlnest-ray runs that itself,
and a life cycle that called it would break the run's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..savepack.package import SavePackage
from .build import Components
from .loop_parts import TrainOptions
from .status import RunningStatus

__all__ = ["RunningTrainer", "TaskProcessView", "TaskView"]


class RunningTrainer(Protocol):
    """What the view reads of the trainer (:class:`~.trainer.Trainer`), always its current value."""

    @property
    def user_args(self) -> dict[str, Any]: ...
    @property
    def opts(self) -> TrainOptions: ...
    @property
    def status(self) -> RunningStatus: ...
    @property
    def comps(self) -> Components | None: ...
    @property
    def pkg(self) -> SavePackage: ...


@dataclass(frozen=True)
class TaskView:
    """DLNest's ``taskProcess.task``: ``args`` (the users' copy of the merged config) and ``ID``."""

    args: dict[str, Any]
    ID: str | None


class TaskProcessView:
    """What ``self.taskProcess`` answers (module docstring)."""

    def __init__(self, trainer: RunningTrainer) -> None:
        self._trainer = trainer

    @property
    def task(self) -> TaskView:
        return TaskView(args=self._trainer.user_args, ID=self._trainer.opts.task_id)

    @property
    def status(self) -> RunningStatus:
        return self._trainer.status

    @property
    def finishedEpoch(self) -> int:
        comps = self._trainer.comps
        return comps.finished_epoch if comps is not None else -1

    @property
    def logDict(self) -> dict[str, Any]:
        comps = self._trainer.comps
        return comps.log if comps is not None else {}

    @property
    def savePackage(self) -> SavePackage:
        return self._trainer.pkg

    @property
    def rank(self) -> int:
        return int(self._trainer.status.rank)
