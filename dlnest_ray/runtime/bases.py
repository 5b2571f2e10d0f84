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
from typing import Any, ClassVar, Final, Generic, TypeVar

from .aliases import Aliased
from .status import EnvType, RunningStatus

__all__ = ["SKIP", "DatasetBase", "LifeCycleBase", "ModelBase", "RunnerBase", "Shadowable", "skipped"]

SKIP: Final = "Skip"
"""What a ``before_*`` hook returns to skip its stage."""
T = TypeVar("T")


def skipped(result: object) -> bool:
    """Whether a ``before_*`` hook's result asks to skip its stage (it returned ``"Skip"``)."""
    return isinstance(result, str) and result == SKIP


class Shadowable(Generic[T]):
    """A read-only view that an instance attribute of the same name replaces (a non-data descriptor):
    ``self.device`` is the run's device until user code assigns ``self.device = 0``; from then on that
    object reads its own value, and dlnest-ray, which never reads these names, is not affected."""

    def __init__(self, get: Callable[[Any], T], doc: str = "") -> None:
        self.get = get
        self.name = ""  # the attribute name, given by __set_name__
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
    ) -> None:  # DLNest's signature: (args, plugins, status), positional or by keyword
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

    def get_save_dict(self) -> dict[str, Any]:
        """State to put into every checkpoint (restored by :meth:`load_save_dict`)."""
        return {}

    def load_save_dict(self, save_dict: dict[str, Any]) -> None:
        """Restore what :meth:`get_save_dict` returned."""

    _ALIASES: ClassVar[tuple[tuple[str, str], ...]] = (
        ("get_args", "getArgs"),
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
    def validation_init(self) -> None:
        """Three-phase validation: before the first validation batch."""

    def validate_a_batch(self, data: Any, iter: int) -> None:
        """Three-phase validation: one validation batch, moved to the device like a training batch."""

    def validation_analyze(self, log: dict[str, Any]) -> None:
        """Three-phase validation: after the last batch, record the results in ``log``."""

    def reduce_sum(self, value: Any) -> Any:
        """Sum across DDP ranks; the value itself here (``ModelBaseTorch`` all-reduces)."""
        return value

    def reduce_mean(self, value: Any) -> Any:
        """Mean across DDP ranks; the value itself here (``ModelBaseTorch`` all-reduces)."""
        return value

    _ALIASES = (
        *_Component._ALIASES,
        ("init_log", "initLog"),
        ("init_optimizer", "initOptimizer"),
        ("run_one_step", "runOneStep"),
        ("validation_init", "validationInit"),
        ("validate_a_batch", "validateABatch"),
        ("validation_analyze", "validationAnalyze"),
        ("reduce_sum", "_reduceSum"),
        ("reduce_mean", "_reduceMean"),
    )


class LifeCycleBase(_Component):
    """Controls the loop: predicates decide what happens after each step and epoch, and every stage has
    a ``before_*``/``after_*`` hook pair (no-ops here, override what you need). A ``before_*`` hook that
    returns ``"Skip"`` (:data:`SKIP`) skips its stage; its ``after_*`` hook runs all the same.

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

    # ------------------------------------------------------------------------------------ predicates
    def need_visualize(self, epoch: int, iter: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        """After each training step: whether to call ``model.visualize`` (default: never)."""
        return False

    def need_validation(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        """After each epoch: whether to validate (default: never)."""
        return False

    def command_line_output(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> None:
        """After each epoch's training, on every rank: print what the output file should show."""
        print(f"Epoch #{epoch} finished!")

    def need_save_model(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        """After each epoch's validation: whether to save a checkpoint (default: never)."""
        return False

    def hold_this_checkpoint(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        """When a checkpoint is saved: whether to keep it in the consistent track (default: no)."""
        return False

    def need_continue_train(self, epoch: int, log: dict[str, Any], args: dict[str, Any]) -> bool:
        """After each epoch (``epoch`` is the last finished one): whether to train another (default: no)."""
        return False

    def train_aborting(self, exception: BaseException) -> None:
        """Called when training raised; the default prints the traceback (into the output file)."""
        traceback.print_exception(type(exception), exception, exception.__traceback__)

    def get_save_dict(self) -> dict[str, Any]:
        """The life cycle's part of every checkpoint (restored by :meth:`load_save_dict`)."""
        return {}

    def load_save_dict(self, save_dict: dict[str, Any]) -> None:
        """Restore state saved by :meth:`get_save_dict`; runs after ``before_all`` on resume."""

    # ------------------------------------------------------------------------------------ hooks
    def before_all(self) -> str | None:
        """First of all, before the dataset and the model are built (and, on resume, before the life
        cycle's saved state is restored). "Skip" skips everything else but :meth:`after_all`: nothing is
        built or trained (an analyzer then refuses to start)."""
        return None

    def after_all(self) -> None:
        """Last of a training run, whatever happened before: after a "Skip" of :meth:`before_all`, a
        failure or a stop too. Analysis does not call it."""

    def before_dataset_init(self) -> str | None:
        """Before the dataset is made and its ``init(args)`` builds the loaders (and, on resume, its saved
        state is restored). "Skip" skips that: there is no dataset and no loader."""
        return None

    def after_dataset_init(self) -> None:
        """After the dataset was built (or its building skipped)."""

    def before_model_init(self) -> str | None:
        """Before the model is made, ``init`` and ``init_optimizer`` run and the log is made (or, on
        resume, model and log are restored). "Skip" skips all of that: there is no model."""
        return None

    def after_model_init(self) -> None:
        """After the model was built (or its building skipped)."""

    def before_train(self) -> str | None:
        """Before the first epoch of this run segment. "Skip" skips training: no epoch runs, and
        :meth:`after_train` follows at once."""
        return None

    def after_train(self) -> None:
        """After the last epoch, when :meth:`need_continue_train` said no (or :meth:`before_train`
        skipped training). Not called when training failed or was stopped."""

    def before_one_epoch(self) -> str | None:
        """At the start of every epoch, on every rank. "Skip" skips the whole epoch — training,
        validation, saving and its metrics row — without counting it as finished;
        :meth:`after_one_epoch` and :meth:`need_continue_train` still run."""
        return None

    def after_one_epoch(self) -> None:
        """At the end of every epoch (after its metrics row), on every rank; then
        :meth:`need_continue_train` decides whether another one follows."""

    def before_model_one_step(self) -> str | None:
        """Before every training step (``status.iter`` is the batch's index). "Skip" skips the step:
        ``run_one_step`` is not called for that batch and the global step is not counted."""
        return None

    def after_model_one_step(self) -> None:
        """After every training step (skipped or not), before :meth:`need_visualize` is asked."""

    def before_visualize(self) -> str | None:
        """Before ``model.visualize``, when :meth:`need_visualize` said so; on the main rank only (rank 0
        under DDP). "Skip" skips that visualize call."""
        return None

    def after_visualize(self) -> None:
        """After a visualize, whenever :meth:`need_visualize` said so, on every rank."""

    def before_validation(self) -> str | None:
        """After an epoch's training, when :meth:`need_validation` said so, on every rank. "Skip" skips
        the validation (``validate``, or DLNest's three phases)."""
        return None

    def after_validation(self) -> None:
        """After the validation (done or skipped), whenever :meth:`need_validation` said so."""

    def before_validate_a_batch(self) -> str | None:
        """In DLNest's three-phase validation (a model with ``validate_a_batch`` and no ``validate``),
        before each validation batch (``status.iter`` is its index). "Skip" skips that batch."""
        return None

    def after_validate_a_batch(self) -> None:
        """After each validation batch of the three-phase validation (skipped or not)."""

    def before_validation_analyze(self) -> str | None:
        """In the three-phase validation, after the batches, before ``validation_analyze``. "Skip"
        skips ``validation_analyze``."""
        return None

    def after_validation_analyze(self) -> None:
        """After ``validation_analyze`` (done or skipped)."""

    def before_save_model(self) -> str | None:
        """After every epoch's validation, on every rank, before :meth:`need_save_model` is asked: it
        runs every epoch, even when nothing is saved. "Skip" skips saving this epoch
        (:meth:`need_save_model` is then not asked)."""
        return None

    def after_save_model(self) -> None:
        """After the save step of every epoch (once every rank knows the checkpoint, if any, was
        captured), on every rank."""

    # DLNest's names (the camelCase ones are made from this table by :mod:`.aliases`)
    _ALIASES = (
        *_Component._ALIASES,
        ("need_visualize", "needVisualize"),
        ("need_validation", "needValidation"),
        ("command_line_output", "commandLineOutput"),
        ("need_save_model", "needSaveModel"),
        ("hold_this_checkpoint", "holdThisCheckpoint"),
        ("need_continue_train", "needContinueTrain"),
        ("train_aborting", "trainAborting"),
        ("before_all", "BAll"),
        ("after_all", "AAll"),
        ("before_dataset_init", "BDatasetInit"),
        ("after_dataset_init", "ADatasetInit"),
        ("before_model_init", "BModelInit"),
        ("after_model_init", "AModelInit"),
        ("before_train", "BTrain"),
        ("after_train", "ATrain"),
        ("before_one_epoch", "BOneEpoch"),
        ("after_one_epoch", "AOneEpoch"),
        ("before_model_one_step", "BModelOneStep"),
        ("after_model_one_step", "AModelOneStep"),
        ("before_visualize", "BVisualize"),
        ("after_visualize", "AVisualize"),
        ("before_validation", "BValidation"),
        ("after_validation", "AValidation"),
        ("before_validate_a_batch", "BValidateABatch"),
        ("after_validate_a_batch", "AValidateABatch"),
        ("before_validation_analyze", "BValidationAnalyze"),
        ("after_validation_analyze", "AValidationAnalyze"),
        ("before_save_model", "BSaveModel"),
        ("after_save_model", "ASaveModel"),
    )


RunnerBase = ModelBase  # DLNest 0.3's name
