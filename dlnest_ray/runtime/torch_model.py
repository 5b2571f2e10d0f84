"""``ModelBaseTorch`` (DLNest 0.3: ``RunnerBaseTorch``): a model built from torch modules.

Assigning an ``nn.Module``, optimizer or LR scheduler (``ReduceLROnPlateau`` included) to ``self``
registers it: modules are moved to the run's device (and wrapped in DDP under DDP), and all of them
are saved in every checkpoint and restored on resume. Registration is idempotent: a module is
registered once whichever way it reaches the model (``self.net = Net()``, ``self.register(net)``,
DLNest's ``self.net = self.register(self.net)``, its DDP wrapper handed back).

Checkpoints key each module by **where it lives on the model** (its attribute name, ``nets[1]`` for
one in a list or dict), never by its position, so a checkpoint never loads into the wrong module when
modules are added, reordered or registered twice by older code. Checkpoints that keyed modules by
position (DLNest's, and dlnest-ray's before names) still load: by position, after dropping the
repeated entries that double registration wrote. Module state is saved from the raw module (no
``module.`` prefix), so checkpoints load the same with or without DDP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import nn

from ..errors import CheckpointError
from .bases import ModelBase
from .distributed import all_reduce
from .status import EnvType

__all__ = ["ModelBaseTorch", "RunnerBaseTorch", "module_names"]

log = logging.getLogger(__name__)

MODULES_KEY = "modules"  # {name: state_dict} in a model's checkpoint part

# torch leaves this classmethod unannotated: it returns the module with its BatchNorm layers converted
_convert_sync_batchnorm = cast(Callable[[nn.Module], nn.Module], nn.SyncBatchNorm.convert_sync_batchnorm)


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


def _places(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``value`` under ``name``, and the items of a list, tuple or dict there (one level)."""
    yield name, value
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield f"{name}[{i}]", item
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{name}[{key!r}]", item


def module_names(owner: Any, modules: list[nn.Module], wrappers: dict[int, Any]) -> list[str]:
    """Each registered module's name: the first attribute of ``owner`` (in assignment order) holding
    it or its DDP wrapper, directly or in a list, tuple or dict; ``#<position>`` for one held nowhere."""
    where: dict[int, int] = {id(m): i for i, m in enumerate(modules)}
    where |= {id(w): i for i, w in wrappers.items()}
    names: list[str | None] = [None] * len(modules)
    for attr, value in vars(owner).items():
        if attr.startswith("_dlnest"):
            continue
        for path, obj in _places(attr, value):
            i = where.get(id(obj))
            if i is not None and names[i] is None:
                names[i] = path
    return [n if n is not None else f"#{i}" for i, n in enumerate(names)]


def _same_state(a: Any, b: Any) -> bool:
    if not (isinstance(a, dict) and isinstance(b, dict)) or list(a) != list(b):
        return False
    return all(
        isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and x.shape == y.shape
        and torch.equal(x, y)
        for x, y in zip(a.values(), b.values(), strict=True)
    )


def _positional_entries(save_dict: dict[Any, Any], count: int) -> list[Any]:
    """The module states of a checkpoint keyed by position, without the repeats that registering a
    module twice wrote (the same state, one entry after the other)."""
    entries = [save_dict[k] for k in sorted(k for k in save_dict if isinstance(k, int))]
    if len(entries) <= count:
        return entries
    kept: list[Any] = []
    for entry in entries:
        if not (kept and _same_state(kept[-1], entry)):
            kept.append(entry)
    return kept


class ModelBaseTorch(ModelBase):
    """A model built from torch modules (module docstring: registration and checkpoint keys)."""

    _DLNEST_BASE = True
    _dlnest_modules: list[nn.Module]
    _dlnest_given: list[int]  # id of what each registration was handed (SyncBN may convert it)
    _dlnest_wrapped: dict[int, _DDPModule]
    _dlnest_optimizers: dict[str, torch.optim.Optimizer]
    _dlnest_schedulers: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_dlnest_modules", [])
        object.__setattr__(self, "_dlnest_given", [])
        object.__setattr__(self, "_dlnest_wrapped", {})
        object.__setattr__(self, "_dlnest_optimizers", {})
        object.__setattr__(self, "_dlnest_schedulers", {})
        super().__init__(*args, **kwargs)

    def _position(self, value: Any) -> int | None:
        """The registration ``value`` is (a raw module, what was handed in, or a DDP wrapper), or None."""
        for i, m in enumerate(self._dlnest_modules):
            if value is m or id(value) == self._dlnest_given[i] or value is self._dlnest_wrapped.get(i):
                return i
        return None

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, nn.Module) and self._position(value) is None:
            value = self.register(value)
        elif isinstance(value, torch.optim.Optimizer):
            self._dlnest_optimizers[name] = value
        elif _is_scheduler(value):
            self._dlnest_schedulers[name] = value
        object.__setattr__(self, name, value)

    def register(self, module: nn.Module, sync_bn: bool = False, *, syncBN: bool | None = None) -> Any:
        """Move ``module`` to the device; under DDP convert BatchNorm to SyncBatchNorm when asked and wrap it.

        Returns what to call in training: the module itself, or under DDP a wrapper that calls through
        DDP and reads attributes from the module. A module registered already (or its wrapper) is not
        registered again: the first result is returned.
        """
        if syncBN is not None:
            sync_bn = syncBN
        known = self._position(module)
        if known is not None:
            return self._dlnest_wrapped.get(known, self._dlnest_modules[known])
        status = self._dlnest_status
        given = id(module)
        device = status.torch_device()
        if status.env is not EnvType.CPU:
            module = module.to(device)
        wrapped: Any = module
        if status.env is EnvType.DDP:
            if sync_bn:
                module = _convert_sync_batchnorm(module)
            if any(p.requires_grad for p in module.parameters()):
                from torch.nn.parallel import DistributedDataParallel

                ids = [device.index] if device.type == "cuda" else None
                # dlnest-ray's own copy of the config: the user may have replaced self.args
                find_unused = bool(self._dlnest_args.get("ddp_find_unused_parameters", False))
                ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
                wrapped = _DDPModule(module, ddp)
                self._dlnest_wrapped[len(self._dlnest_modules)] = wrapped
        self._dlnest_modules.append(module)
        self._dlnest_given.append(given)
        return wrapped

    @property
    def modules(self) -> list[nn.Module]:
        """The registered raw modules, in registration order."""
        return list(self._dlnest_modules)

    def module_names(self) -> list[str]:
        """The checkpoint key of each registered module (see :func:`module_names`)."""
        return module_names(self, self._dlnest_modules, self._dlnest_wrapped)

    def get_save_dict(self) -> dict[Any, Any]:
        names = self.module_names()
        return {
            MODULES_KEY: {n: m.state_dict() for n, m in zip(names, self._dlnest_modules, strict=True)},
            "optimizer": {k: o.state_dict() for k, o in self._dlnest_optimizers.items()},
            "scheduler": {k: s.state_dict() for k, s in self._dlnest_schedulers.items()},
        }

    def load_save_dict(self, save_dict: dict[Any, Any]) -> None:
        if MODULES_KEY in save_dict:
            self._load_by_name(save_dict[MODULES_KEY])
        else:
            self._load_by_position(save_dict)
        for k, o in self._dlnest_optimizers.items():
            if k in save_dict.get("optimizer", {}):
                o.load_state_dict(save_dict["optimizer"][k])
        for k, s in self._dlnest_schedulers.items():
            if k in save_dict.get("scheduler", {}):
                s.load_state_dict(save_dict["scheduler"][k])

    def _load_by_name(self, saved: dict[str, Any]) -> None:
        names = self.module_names()
        for name, module in zip(names, self._dlnest_modules, strict=True):
            if name not in saved:
                log.warning("the checkpoint has no state for module %r: it keeps its initial weights", name)
                print(f"[dlnest-ray] warning: the checkpoint has no state for module {name!r}", flush=True)
                continue
            self._load_one(module, saved[name], name)
        unused = sorted(set(saved) - set(names))
        if unused:
            log.warning("checkpoint modules not on this model: %s", ", ".join(unused))
            print(
                f"[dlnest-ray] warning: checkpoint modules not on this model: {', '.join(unused)}", flush=True
            )

    def _load_by_position(self, save_dict: dict[Any, Any]) -> None:
        entries = _positional_entries(save_dict, len(self._dlnest_modules))
        if entries and len(entries) != len(self._dlnest_modules):
            raise CheckpointError(
                f"the checkpoint holds {len(entries)} modules by position but the model registers "
                f"{len(self._dlnest_modules)} ({', '.join(self.module_names())}): cannot tell which is which"
            )
        for name, module, state in zip(self.module_names(), self._dlnest_modules, entries, strict=False):
            self._load_one(module, state, name)

    @staticmethod
    def _load_one(module: nn.Module, state: Any, name: str) -> None:
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(
                f"the checkpoint's state of module {name!r} does not fit it: {first}"
            ) from e

    def _reduce(self, value: Any, mean: bool) -> Any:
        status = self._dlnest_status
        if status.env is not EnvType.DDP:
            return value
        import torch.distributed as dist

        t = (
            value.detach().clone()
            if isinstance(value, torch.Tensor)
            else torch.tensor(value, device=status.torch_device())
        )
        all_reduce(t, dist.ReduceOp.SUM)
        return t / status.world_size if mean else t

    def reduce_sum(self, value: Any) -> Any:
        """Sum across DDP ranks (every rank gets the result; a collective: call it on all ranks)."""
        return self._reduce(value, mean=False)

    def reduce_mean(self, value: Any) -> Any:
        """Mean across DDP ranks (every rank gets the result; a collective: call it on all ranks)."""
        return self._reduce(value, mean=True)


RunnerBaseTorch = ModelBaseTorch  # DLNest 0.3's name
