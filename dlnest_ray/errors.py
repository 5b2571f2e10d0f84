"""The one exception tree of dlnest-ray.

Every failure a user can cause or fix is a :class:`DlnestError` whose message says what went wrong
and what to do about it. The CLI catches only this base class: it prints the message as one red line
and exits 1. Anything else escaping is a bug in dlnest-ray and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "CheckpointError",
    "ConfigError",
    "DlnestError",
    "PackageError",
    "ProjectError",
    "RunPreempted",
    "RunStopped",
    "TrainingFailed",
    "UserCodeError",
]


class DlnestError(Exception):
    """Base of every user-facing dlnest-ray error; ``str(e)`` is a complete, one-line explanation."""


class ConfigError(DlnestError):
    """A config file is missing, malformed, cyclic, or lacks required keys."""


class PackageError(DlnestError):
    """A save package cannot be created, opened or changed as asked."""


class CheckpointError(PackageError):
    """No checkpoint matches the request, or the one asked for is damaged."""


class ProjectError(DlnestError):
    """A project folder cannot be created (for example, the target is not empty)."""


class UserCodeError(DlnestError):
    """The user's model/dataset/life-cycle/script code cannot be loaded or breaks the contract."""


class TrainingFailed(DlnestError):
    """A training run ended with an exception raised by user code (traceback is in the output file)."""


class RunStopped(DlnestError):
    """A queued run's rank stopped because the run was asked to (``del``, ``down --force``); the message
    says at which epoch and which checkpoint was kept."""


class AnalysisError(DlnestError):
    """An analysis script could not be run or raised."""


class RunPreempted(RunStopped):
    """A queued run's rank stopped at an epoch boundary because a higher-priority task preempted it;
    the message says after which epoch and which checkpoint it resumes from."""
