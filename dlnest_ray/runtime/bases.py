"""The user-code contract: base classes for the model, the dataset and the life cycle.

Names follow PEP 8; DLNest's camelCase names are accepted as aliases (override or call either), so a
project written to DLNest's coding guide runs after changing only its imports.
"""

from __future__ import annotations

import traceback
from typing import Any, ClassVar

import torch
from torch import nn

from .aliases import Aliased, forward
from .status import EnvType, RunningStatus

__all__ = ["DatasetBase", "LifeCycleBase", "ModelBase", "ModelBaseTorch"]

SKIP = "Skip"


class _Component(Aliased):
    _DLNEST_BASE = True

    def __init__(
        self, args: dict[str, Any] | None = None, *_: Any, status: RunningStatus | None = None, **__: Any
    ):
        self.args: dict[str, Any] = args if args is not None else {}
        self.status = status if status is not None else RunningStatus()

    # DLNest read-only status properties
    @property
    def env_type(self) -> str:
        return str(self.status.env)

    @property
    def rank(self) -> int:
        return self.status.rank

    @property
    def world_size(self) -> int:
        return self.status.world_size

    @property
    def device(self) -> torch.device:
        return self.status.device if self.status.device is not None else torch.device("cpu")

    _envType = env_type
    _rank = rank
    _worldSize = world_size
    _status = property(lambda self: self.status)

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
        if self.status.env is not EnvType.DDP:
            return None
        from torch.utils.data.distributed import DistributedSampler

        return DistributedSampler(
            dataset,
            num_replicas=self.status.world_size,
            rank=self.status.rank,
            shuffle=shuffle,
            seed=int(self.args.get("seed", 0) or 0),
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


class _DDPModule:
    """What ``register`` returns under DDP: calls go through DDP, attributes to the raw module."""

    def __init__(self, module: nn.Module, ddp: nn.Module) -> None:
        object.__setattr__(self, "module", module)
        object.__setattr__(self, "ddp", ddp)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ddp(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.module, name, value)


def _is_scheduler(value: Any) -> bool:
    lr = torch.optim.lr_scheduler
    return isinstance(value, (lr.LRScheduler, lr.ReduceLROnPlateau))


class ModelBaseTorch(ModelBase):
    """A model built from torch modules.

    Assigning an ``nn.Module``, optimizer or LR scheduler (``ReduceLROnPlateau`` included) to ``self``
    registers it: modules are moved to the run's device (and wrapped in DDP under DDP), and all of them
    are saved in every checkpoint and restored on resume. Module state is saved from the raw module, so
    checkpoints load the same with or without DDP.
    """

    _DLNEST_BASE = True
    _dlnest_modules: list[nn.Module]
    _dlnest_wrapped: dict[int, _DDPModule]
    _dlnest_optimizers: dict[str, torch.optim.Optimizer]
    _dlnest_schedulers: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_dlnest_modules", [])
        object.__setattr__(self, "_dlnest_wrapped", {})
        object.__setattr__(self, "_dlnest_optimizers", {})
        object.__setattr__(self, "_dlnest_schedulers", {})
        super().__init__(*args, **kwargs)

    def _registered(self, value: Any) -> bool:
        return any(value is m for m in self._dlnest_modules) or isinstance(value, _DDPModule)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module) and not self._registered(value):
            value = self.register(value)
        elif isinstance(value, torch.optim.Optimizer):
            self._dlnest_optimizers[name] = value
        elif _is_scheduler(value):
            self._dlnest_schedulers[name] = value
        object.__setattr__(self, name, value)

    def register(self, module: nn.Module, sync_bn: bool = False, *, syncBN: bool | None = None) -> Any:
        """Move ``module`` to the device; under DDP convert BatchNorm to SyncBatchNorm when asked and wrap it.

        Returns what to call in training: the module itself, or under DDP a wrapper that calls through
        DDP and reads attributes from the module. Registering the same module twice returns the first result.
        """
        if syncBN is not None:
            sync_bn = syncBN
        for i, m in enumerate(self._dlnest_modules):
            if m is module:
                return self._dlnest_wrapped.get(i, m)
        env = self.status.env
        if env is not EnvType.CPU:
            module = module.to(self.device)
        wrapped: Any = module
        if env is EnvType.DDP:
            if sync_bn:
                module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            if any(p.requires_grad for p in module.parameters()):
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                find_unused = bool(self.args.get("ddp_find_unused_parameters", False))
                ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
                wrapped = _DDPModule(module, ddp)
                self._dlnest_wrapped[len(self._dlnest_modules)] = wrapped
        self._dlnest_modules.append(module)
        return wrapped

    @property
    def modules(self) -> list[nn.Module]:
        """The registered raw modules, in registration order."""
        return list(self._dlnest_modules)

    def get_save_dict(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {i: m.state_dict() for i, m in enumerate(self._dlnest_modules)}
        out["optimizer"] = {k: o.state_dict() for k, o in self._dlnest_optimizers.items()}
        out["scheduler"] = {k: s.state_dict() for k, s in self._dlnest_schedulers.items()}
        return out

    def load_save_dict(self, save_dict: dict[Any, Any]) -> None:
        for i, m in enumerate(self._dlnest_modules):
            if i in save_dict:
                m.load_state_dict(save_dict[i])
        for k, o in self._dlnest_optimizers.items():
            if k in save_dict.get("optimizer", {}):
                o.load_state_dict(save_dict["optimizer"][k])
        for k, s in self._dlnest_schedulers.items():
            if k in save_dict.get("scheduler", {}):
                s.load_state_dict(save_dict["scheduler"][k])

    def _reduce(self, value: Any, mean: bool) -> Any:
        if self.status.env is not EnvType.DDP:
            return value
        import torch.distributed as dist

        t = (
            value.detach().clone()
            if isinstance(value, torch.Tensor)
            else torch.tensor(value, device=self.device)
        )
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.status.world_size if mean else t

    def reduce_sum(self, value: Any) -> Any:
        """Sum across DDP ranks (every rank gets the result; a collective: call it on all ranks)."""
        return self._reduce(value, mean=False)

    def reduce_mean(self, value: Any) -> Any:
        """Mean across DDP ranks (every rank gets the result; a collective: call it on all ranks)."""
        return self._reduce(value, mean=True)


class LifeCycleBase(Aliased):
    """Controls the loop. Predicates decide; ``before_*`` hooks returning ``"Skip"`` skip that stage.

    Attributes set by the framework: ``args``, ``status``, ``dataset``, ``model`` (also ``runner``),
    ``package`` (the :class:`~dlnest_ray.SavePackage`, or None when analysing without one).
    """

    _DLNEST_BASE = True

    def __init__(self, *_: Any, **__: Any) -> None:
        self.args: dict[str, Any] = {}
        self.status = RunningStatus()
        self.dataset: Any = None
        self.model: Any = None
        self.package: Any = None

    @property
    def runner(self) -> Any:
        return self.model

    @property
    def rank(self) -> int:
        return self.status.rank

    _status = property(lambda self: self.status)

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
