"""Analysis: load a save package once (copied code, args, dataset, model, checkpoint) and run
``experience(self)`` functions against it. Used by the foreground ``dlnest-ray analyze`` and
``dlnest_ray.analyze()``; the persistent analyzer actor keeps one :class:`Analyzer` warm.

The package is read, never changed: no checkpoint is written and no track is touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import AnalysisError, UserCodeError
from ..savepack.package import SavePackage
from .bases import LifeCycleBase
from .build import build_components, training_state
from .distributed import choose_device, seed_everything
from .loader import load_script, load_user_classes
from .status import Phase, RunningStatus

__all__ = ["AnalyzeContext", "Analyzer", "analyze", "resolve_script"]

NO_CHECKPOINT = -2  # DLNest's "build the model without loading a checkpoint"


class AnalyzeContext:
    """The ``self`` of ``experience(self)``. Scripts may store their own attributes on it; they persist
    between scripts run on the same analyzer."""

    def __init__(
        self,
        *,
        args: dict[str, Any],
        model: Any,
        dataset: Any,
        log: dict[str, Any],
        package: SavePackage,
        status: RunningStatus,
        life_cycle: LifeCycleBase,
        checkpoint_id: int | None,
    ) -> None:
        self.args = args
        self.model = model
        self.dataset = dataset
        self.log = log
        self.package = package
        self.status = status
        self.life_cycle = life_cycle
        self.checkpoint_id = checkpoint_id

    @property
    def runner(self) -> Any:
        """DLNest 0.3's name for the model object."""
        return self.model


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class Analyzer:
    """A loaded package, ready to run analysis functions and scripts."""

    def __init__(
        self,
        package: str | Path,
        *,
        ckpt_id: int = -1,
        cpu: bool = False,
        gpus: tuple[int, ...] | None = None,
    ) -> None:
        self.package = SavePackage.open(package)
        assert self.package.path is not None
        self.path: Path = self.package.path
        status = choose_device(cpu=cpu, gpus=gpus, dist=None)
        state = None
        ckpt: int | None = None
        if ckpt_id != NO_CHECKPOINT:
            ckpt = self.package.resolve_ckpt_id(ckpt_id)
            state = training_state(self.package.state_dict(ckpt, device=str(status.device)), ckpt)
        seed_everything(self.package.seed or 0)
        with _cwd(self.path):
            classes = load_user_classes(self.package.args, self.path)
            comps = build_components(classes, self.package.args, status, package=self.package, state=state)
        if comps.skipped_all:
            raise UserCodeError("LifeCycle.before_all returned 'Skip': nothing was built to analyse")
        status.phase = Phase.ANALYZING
        status.epoch = comps.finished_epoch
        self.context = AnalyzeContext(
            args=self.package.args,
            model=comps.model,
            dataset=comps.dataset,
            log=comps.log,
            package=self.package,
            status=status,
            life_cycle=comps.life_cycle,
            checkpoint_id=ckpt,
        )

    def run(self, fn: Callable[[AnalyzeContext], Any]) -> Any:
        """Call ``fn(context)`` with the package folder as CWD; exceptions propagate unchanged."""
        with _cwd(self.path):
            return fn(self.context)

    def run_script(self, script: Path) -> Any:
        """Import ``script`` afresh (edits take effect) and run its ``experience(self)``."""
        return self.run(load_script(script))


def resolve_script(script: str | Path, folder: Path | None) -> Path:
    """A script path as given (``folder`` None), or ``NAME``/``NAME.py``/a path inside ``folder``: anything
    that resolves outside ``folder`` (``../x``, an absolute path elsewhere, a symlink out) is refused."""
    p = Path(script).expanduser()
    if folder is None:
        candidate = p if p.suffix == ".py" or p.exists() else p.with_suffix(".py")
        return candidate.resolve()
    folder = folder.resolve()
    candidate = (folder / p).resolve()
    if candidate.suffix != ".py" and not candidate.exists():
        candidate = candidate.with_suffix(".py")
    if not candidate.is_relative_to(folder):
        raise AnalysisError(f"script {str(script)!r} resolves outside the scripts folder {folder}")
    return candidate


def analyze(
    record_path: str | Path | None = None,
    exp_func: Callable[[AnalyzeContext], Any] | None = None,
    checkpoint_id: int = -1,
    script_path: str | Path | None = None,
    *,
    cpu: bool = False,
    **dlnest_names: Any,
) -> Any:
    """Load the package at ``record_path`` and run ``exp_func(self)`` (or ``experience`` from
    ``script_path``) once; returns its result. DLNest's ``recordPath``/``expFunc``/``checkpointID``/
    ``scriptPath`` keywords are accepted.
    """
    record_path = dlnest_names.pop("recordPath", record_path)
    exp_func = dlnest_names.pop("expFunc", exp_func)
    checkpoint_id = dlnest_names.pop("checkpointID", checkpoint_id)
    script_path = dlnest_names.pop("scriptPath", script_path) or None
    dlnest_names.pop("devices", None)  # DLNest's device list: placement is chosen here
    if dlnest_names:
        raise TypeError(f"analyze() got unexpected keyword arguments: {', '.join(dlnest_names)}")
    if record_path is None:
        raise TypeError("analyze() needs record_path")
    if exp_func is not None:
        fn = exp_func
    elif script_path is not None:
        fn = load_script(resolve_script(script_path, None))
    else:
        raise TypeError("analyze() needs exp_func or script_path")
    return Analyzer(record_path, ckpt_id=checkpoint_id, cpu=cpu).run(fn)
