"""Building a run's components, shared by training and analysis (DLNest's ``initModules``).

Order: life cycle → ``before_all`` → (resume: life-cycle state) → dataset (``before/after_dataset_init``)
→ model with ``init``, ``init_optimizer`` (``before/after_model_init``) → (resume: dataset, model and
log state). DLNest restored the life-cycle state *before* ``before_all``, so a template resetting its
best accuracy in ``before_all`` lost it on every resume; here the restored state wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, UserCodeError
from .bases import LifeCycleBase, skipped
from .loader import UserClasses
from .status import RunningStatus

__all__ = [
    "Components",
    "bind_log",
    "build_components",
    "checkpoint_state",
    "init_components",
    "new_components",
    "training_state",
]

CHECKPOINT_FORMAT = "dlnest-ray/1"


@dataclass(kw_only=True)
class Components:
    """A run's user objects and where it stands. ``dataset`` and ``model`` are the user's objects (None
    when their ``before_*_init`` hook skipped them); ``finished_epoch`` is -1 before the first epoch."""

    life_cycle: LifeCycleBase
    dataset: Any = None
    model: Any = None
    dataset_info: Any = None
    train_loader: Any = None
    val_loader: Any = None
    log: dict[str, Any] = field(default_factory=dict)
    finished_epoch: int = -1
    global_step: int = 0
    skipped_all: bool = False


def new_components(
    classes: UserClasses, args: dict[str, Any], status: RunningStatus, *, package: Any, task: Any = None
) -> Components:
    """Instantiate the life cycle alone, so that a failure in anything built after it still reaches
    its ``train_aborting`` and ``after_all``. ``args`` is the users' copy of the config (dlnest-ray
    reads its own settings from another), ``task`` DLNest's ``taskProcess`` view."""
    lc = classes.life_cycle()
    if not isinstance(lc, LifeCycleBase):
        raise UserCodeError(
            f"the life cycle class {classes.life_cycle.__name__} must subclass dlnest_ray.LifeCycleBase"
        )
    lc._dlnest_bind_run(args, status, package, task)
    return Components(life_cycle=lc)


def _attach(obj: Any, args: dict[str, Any], status: RunningStatus) -> None:
    """dlnest-ray's own state of a user object, whatever its ``__init__`` passed up (DLNest code
    passes ``status`` positionally, or builds its base with other arguments)."""
    object.__setattr__(obj, "_dlnest_args", args)
    object.__setattr__(obj, "_dlnest_status", status)
    if "args" not in obj.__dict__:  # an __init__ that never called its base's
        object.__setattr__(obj, "args", args)


def bind_log(model: Any, log: dict[str, Any]) -> None:
    """Make ``model.log`` the live log dict (DLNest code keeps ``self.log`` from ``initLog``, and a
    resumed run never calls it), unless the model uses that name for something that is not a dict."""
    current = model.__dict__.get("log", None)
    if current is None or isinstance(current, dict):
        object.__setattr__(model, "log", log)


def init_components(
    comps: Components,
    classes: UserClasses,
    args: dict[str, Any],
    status: RunningStatus,
    *,
    state: dict[str, Any] | None,
) -> None:
    """``before_all``, then the dataset and the model (with their hooks); restore ``state`` when given."""
    lc = comps.life_cycle
    if skipped(lc.before_all()):
        comps.skipped_all = True
        return
    if state is not None:
        lc.load_save_dict(state.get("life_cycle", {}))
        comps.finished_epoch = int(state.get("finished_epoch", -1))
        comps.global_step = int(state.get("global_step", 0))
    if not skipped(lc.before_dataset_init()):
        _init_dataset(comps, classes.dataset, args, status, state)
    lc.after_dataset_init()
    if not skipped(lc.before_model_init()):
        _init_model(comps, classes.model, args, status, state)
    lc.after_model_init()


def _init_dataset(
    comps: Components, cls: type, args: dict[str, Any], status: RunningStatus, state: dict[str, Any] | None
) -> None:
    """Make the dataset and its loaders; restore its state when resuming."""
    ds = cls(args, status=status)
    _attach(ds, args, status)
    result = ds.init(args)
    if not (isinstance(result, tuple) and len(result) == 3):
        raise UserCodeError("Dataset.init(args) must return (dataset_info, train_loader, val_loader)")
    comps.dataset_info, comps.train_loader, comps.val_loader = result
    if state is not None:
        ds.load_save_dict(state.get("dataset", {}))
    comps.dataset = comps.life_cycle.dataset = ds


def _init_model(
    comps: Components, cls: type, args: dict[str, Any], status: RunningStatus, state: dict[str, Any] | None
) -> None:
    """Make the model, its optimizers and the log; restore model and log when resuming."""
    model = cls(args, status=status)
    _attach(model, args, status)
    model.init(args, comps.dataset_info)
    model.init_optimizer()
    if state is not None:
        model.load_save_dict(state.get("runner", state.get("model", {})))
        comps.log = state.get("log_dict", {})
    else:
        fresh = model.init_log()
        comps.log = fresh if fresh is not None else {}  # an empty dict is the user's, kept as is
    bind_log(model, comps.log)
    comps.model = comps.life_cycle.model = model


def build_components(
    classes: UserClasses,
    args: dict[str, Any],
    status: RunningStatus,
    *,
    package: Any,
    state: dict[str, Any] | None,
) -> Components:
    """:func:`new_components` then :func:`init_components`."""
    comps = new_components(classes, args, status, package=package)
    init_components(comps, classes, args, status, state=state)
    return comps


def checkpoint_state(comps: Components, *, seed: int | None, rng: dict[str, Any]) -> dict[str, Any]:
    """The dict saved as one checkpoint (DLNest's keys plus step, RNG, seed and a format tag)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "life_cycle": comps.life_cycle.get_save_dict(),
        "dataset": comps.dataset.get_save_dict() if comps.dataset is not None else {},
        "runner": comps.model.get_save_dict() if comps.model is not None else {},
        "log_dict": comps.log,
        "finished_epoch": comps.finished_epoch,
        "global_step": comps.global_step,
        "seed": seed,
        "rng": rng,
    }


def training_state(state: object, ckpt_id: int) -> dict[str, Any]:
    """A loaded checkpoint as the training state it must be (a dict, as :func:`checkpoint_state` made
    it); anything else is a :class:`CheckpointError`."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {ckpt_id} holds a {type(state).__name__}, not a dlnest-ray training state (a dict)"
        )
    return state
