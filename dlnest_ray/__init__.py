"""dlnest-ray: queue, place, record, resume and analyze PyTorch training runs, on one machine or a cluster.

The public API is loaded lazily so that ``import dlnest_ray`` (and the CLI's ``--help``) import
neither torch nor ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    AnalysisError,
    CheckpointError,
    ConfigError,
    DlnestError,
    PackageError,
    ProjectError,
    TrainingFailed,
    UserCodeError,
)

if TYPE_CHECKING:
    from .actors.client import connect
    from .runtime.analysis import AnalyzeContext, analyze
    from .runtime.bases import DatasetBase, LifeCycleBase, ModelBase, RunnerBase
    from .runtime.status import RunningStatus
    from .runtime.torch_model import ModelBaseTorch, RunnerBaseTorch
    from .savepack.package import SavePackage

__version__ = "0.1.0"

_LAZY = {
    "ModelBase": "runtime.bases",
    "ModelBaseTorch": "runtime.torch_model",
    "RunnerBase": "runtime.bases",
    "RunnerBaseTorch": "runtime.torch_model",
    "DatasetBase": "runtime.bases",
    "LifeCycleBase": "runtime.bases",
    "RunningStatus": "runtime.status",
    "SavePackage": "savepack.package",
    "analyze": "runtime.analysis",
    "connect": "actors.client",
    "AnalyzeContext": "runtime.analysis",
}

__all__ = [
    "AnalysisError",
    "AnalyzeContext",
    "CheckpointError",
    "ConfigError",
    "DatasetBase",
    "DlnestError",
    "LifeCycleBase",
    "ModelBase",
    "ModelBaseTorch",
    "PackageError",
    "ProjectError",
    "RunnerBase",
    "RunnerBaseTorch",
    "RunningStatus",
    "SavePackage",
    "TrainingFailed",
    "UserCodeError",
    "__version__",
    "analyze",
    "connect",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dlnest_ray' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
