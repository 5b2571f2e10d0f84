"""The user-code contract: base classes for the model, the dataset and the life cycle.

Names follow PEP 8; DLNest's camelCase names are accepted as aliases (override or call either), so a
project written to DLNest's coding guide runs after changing only its imports. DLNest 0.3 calls the
model a *runner*: ``RunnerBase``/``RunnerBaseTorch`` are the same classes.

dlnest-ray keeps its own state of each object under ``_dlnest_*`` names, which user code does not
use, and reads only those: the names a user sees (``args``, ``status``, ``device``, ``rank``, ...) are
conveniences that user code may replace (``self.device = 0``, ``self.args = args["model_config"]``,
as real DLNest code does) without changing what dlnest-ray does.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from .aliases import Aliased, forward
from .status import EnvType, RunningStatus

__all__ = ["DatasetBase", "LifeCycleBase", "ModelBase", "RunnerBase", "Shadowable"]

SKIP = "Skip"
T = TypeVar("T")


class Shadowable(Generic[T]):
    """A read-only view that an instance attribute of the same name replaces (a non-data descriptor):
    ``self.device`` is the run's device until user code assigns ``self.device = 0``; from then on that
    object reads its own value, and dlnest-ray, which never reads these names, is not affected."""

    def __init__(self, get: Callable[[Any], T], doc: str = "") -> None:
        self.get = get
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else self.get(obj)


class _Component(Aliased):
    """What the model, the dataset and the life cycle share: the merged config and the running status,
    kept in ``_dlnest_args`` and ``_dlnest_status``."""

    _DLNEST_BASE = True
    _dlnest_args: dict[str, Any]
    _dlnest_status: RunningStatus

    def __init__(
        self,
        args: dict[str, Any] | None = None,
        plugins: Any = None,
        status: RunningStatus | None = None,
        *_: Any,
        **__: Any,
    ):  # DLNest's signature: (args, plugins, status), positional or by keyword
        del plugins  # dlnest-ray runs the plugins itself
        self._dlnest_bind(args if args is not None else {}, status if status is not None else RunningStatus())

    def _dlnest_bind(self, args: dict[str, Any], status: RunningStatus) -> None:
        object.__setattr__(self, "_dlnest_args", args)
        object.__setattr__(self, "_dlnest_status", status)
        object.__setattr__(self, "args", args)  # a plain attribute: the user's to replace

    status = Shadowable(lambda self: self._dlnest_status, "The shared RunningStatus (DLNest's ``_status``).")
    env_type = Shadowable(lambda self: str(self._dlnest_status.env), "CPU, GPU, GPUs or DDP.")
    rank = Shadowable(lambda self: self._dlnest_status.rank, "The DDP rank; -1 outside DDP.")
    world_size = Shadowable(lambda self: self._dlnest_status.world_size, "Processes of the run.")
    device = Shadowable(lambda self: self._dlnest_status.torch_device(), "The run's torch device.")
    _status = Shadowable(lambda self: self._dlnest_status)
    _args = Shadowable(lambda self: self._dlnest_args, "DLNest's name for the full merged config.")
    _envType = env_type
    _rank = rank
    _worldSize = world_size

    def get_args(self) -> dict[str, Any]:
        """The whole merged config, whatever ``self.args`` was set to (DLNest's ``getArgs()``)."""
        return self._dlnest_args

    getArgs = forward("get_args")

    def get_save_dict(self) -> dict[str, Any]:
        """State to put into every checkpoint (restored by :meth:`load_save_dict`)."""
        return {}

    def load_save_dict(self, save_dict: dict[str, Any]) -> None:
        """Restore what :meth:`get_save_dict` returned."""

    getSaveDict = forward("get_save_dict")
    loadSaveDict = forward("load_save_dict")
    _ALIASES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("get_save_dict", "getSaveDict"),
        ("load_save_dict", "loadSaveDict"),
    )


class DatasetBase(_Component):
    """Builds the loaders. ``init(args)`` returns ``(dataset_info, train_loader, val_loader)``."""

    _DLNEST_BASE = True

    def init(self, args: dict[str, Any]) -> tuple[Any, Any, Any]:
        raise NotImplementedError("Dataset.init(args) must return (dataset_info, train_loader, val_loader)")

    def sampler(self, dataset: Any, *, shuffle: bool = True) -> Any:
        """A ``DistributedSampler`` under DDP (pass it to your DataLoader), else ``None``."""
        status = self._dlnest_status
        if status.env is not EnvType.DDP:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(
            dataset,
            num_replicas=status.world_size,
            rank=status.rank,
            shuffle=shuffle,
            seed=int(self._dlnest_args.get("seed", 0) or 0),
        )

    getSampler = forward("sampler")
    _ALIASES = (*_Component._ALIASES, ("sampler", "getSampler"))


class ModelBase(_Component):
    """A model ("runner" in DLNest 0.3) not tied to torch modules: override the hooks you need."""

    _DLNEST_BASE = True

    def init(self, args: dict[str, Any], dataset_info: Any = None) -> None:
        """Build the networks (no optimizer here: it is built after DDP wrapping, in init_optimizer)."""

    def init_log(self) -> dict[str, Any]:
        """The log dict: everything to record during training (lists of values, usually)."""
        return {}

    def init_optimizer(self) -> None:
        """Build optimizers and LR schedulers (after the networks were moved and wrapped)."""

    def run_one_step(self, data: Any, log: dict[str, Any], iter: int, epoch: int) -> None:
        raise NotImplementedError("Model.run_one_step(data, log, iter, epoch) is required")

    def visualize(self, epoch: int, iter: int, log: dict[str, Any]) -> None:
        """Called when LifeCycle.need_visualize says so (rank 0 only under DDP)."""

    def validate(self, val_loader: Any, log: dict[str, Any]) -> None:
        """Called after an epoch when LifeCycle.need_validation says so (on every rank)."""

    # DLNest's three-phase validation, used when a model overrides validate_a_batch instead of validate
    def validation_init(self) -> None: ...

    def validate_a_batch(self, data: Any, iter: int) -> None: ...

    def validation_analyze(self, log: dict[str, Any]) -> None: ...

    def reduce_sum(self, value: Any) -> Any:
        return value

    def reduce_mean(self, value: Any) -> Any:
        return value

    initLog = forward("init_log")
    initOptimizer = forward("init_optimizer")
    runOneStep = forward("run_one_step")
    validationInit = forward("validation_init")
    validateABatch = forward("validate_a_batch")
    validationAnalyze = forward("validation_analyze")
    _reduceSum = forward("reduce_sum")
    _reduceMean = forward("reduce_mean")
    _ALIASES = (
        *_Component._ALIASES,
        ("init_log", "initLog"),
        ("init_optimizer", "initOptimizer"),
        ("run_one_step", "runOneStep"),
        ("validation_init", "validationInit"),
        ("validate_a_batch", "validateABatch"),
        ("validation_analyze", "validationAnalyze"),
    )


class LifeCycleBase(_Component):
    """Controls the loop. Predicates decide; ``before_*`` hooks returning ``"Skip"`` skip that stage.

    Attributes set by the framework: ``args``, ``status``, ``dataset``, ``model`` (also ``runner``),
    ``package`` (the :class:`~dlnest_ray.SavePackage`, or None when analysing without one), and
    ``taskProcess`` (DLNest's handle on the running task, see :class:`~.compat.TaskProcessView`).
    """

    _DLNEST_BASE = True
    _dlnest_task: Any

    def __init__(self, *_: Any, **__: Any) -> None:  # DLNest passes taskProcess, plugins, status
        super().__init__()
        object.__setattr__(self, "_dlnest_task", None)
        self.dataset: Any = None
        self.model: Any = None
        self.package: Any = None

    def _dlnest_bind_run(
        self, args: dict[str, Any], status: RunningStatus, package: Any, task: Any = None
    ) -> None:
        self._dlnest_bind(args, status)
        object.__setattr__(self, "_dlnest_task", task)
        self.package = package

    runner = Shadowable(lambda self: self.model, "The model (DLNest 0.3's name).")
    taskProcess = Shadowable(lambda self: self._dlnest_task, "DLNest's TaskProcess, as a read-only view.")

    def need_visualize(self, epoch: int, iter: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False

    def need_validation(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False

    def command_line_output(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> None:
        print(f"Epoch #{epoch} finished!")

    def need_save_model(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False

    def hold_this_checkpoint(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False

    def need_continue_train(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        return False

    def train_aborting(self, exception: BaseException) -> None:
        """Called when training raised; the default prints the traceback (into the output file)."""
        traceback.print_exception(type(exception), exception, exception.__traceback__)

    def get_save_dict(self) -> dict[str, Any]:
        return {}

    def load_save_dict(self, save_dict: dict[str, Any]) -> None:
        """Restore state saved by :meth:`get_save_dict`; runs after ``before_all`` on resume."""


_STAGES = (
    ("all", "All"),
    ("dataset_init", "DatasetInit"),
    ("model_init", "ModelInit"),
    ("train", "Train"),
    ("one_epoch", "OneEpoch"),
    ("model_one_step", "ModelOneStep"),
    ("visualize", "Visualize"),
    ("validation", "Validation"),
    ("validate_a_batch", "ValidateABatch"),
    ("validation_analyze", "ValidationAnalyze"),
    ("save_model", "SaveModel"),
)
_PREDICATES = (
    ("need_visualize", "needVisualize"),
    ("need_validation", "needValidation"),
    ("command_line_output", "commandLineOutput"),
    ("need_save_model", "needSaveModel"),
    ("hold_this_checkpoint", "holdThisCheckpoint"),
    ("need_continue_train", "needContinueTrain"),
    ("train_aborting", "trainAborting"),
    ("get_save_dict", "getSaveDict"),
    ("load_save_dict", "loadSaveDict"),
)


def _make_hook() -> Any:
    def hook(self: Any) -> Any:
        return None

    return hook


for _snake, _camel in _STAGES:
    for _when, _prefix in (("before", "B"), ("after", "A")):
        _hook = _make_hook()
        _hook.__name__ = f"{_when}_{_snake}"
        _hook.__doc__ = f"Hook {_when} {_snake.replace('_', ' ')}" + (
            '; return "Skip" to skip the stage.' if _when == "before" else "."
        )
        setattr(LifeCycleBase, f"{_when}_{_snake}", _hook)
        setattr(LifeCycleBase, f"{_prefix}{_camel}", forward(f"{_when}_{_snake}"))
for _snake, _camel in _PREDICATES:
    setattr(LifeCycleBase, _camel, forward(_snake))
LifeCycleBase._ALIASES = (
    *((f"{w}_{s}", f"{p}{c}") for s, c in _STAGES for w, p in (("before", "B"), ("after", "A"))),
    *_PREDICATES,
)

RunnerBase = ModelBase  # DLNest 0.3's name
