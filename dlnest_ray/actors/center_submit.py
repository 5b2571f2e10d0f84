"""The center's submit operations: ``run``, ``continue``, ``analyze`` (a mixin of :class:`~.center.Center`).

Submitting validates the config and creates the save package *at submit time* (code snapshot,
``args.json``), so later edits to the project do not affect a queued run; a request that no node could
ever satisfy is refused before any package is made.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..checks import checked_priority, checked_retries, config_nice
from ..errors import DlnestError, PackageError
from ..runenv import checked_env
from ..savepack.facts import analyzer_memory_mb, find_scripts_dir, package_description
from ..savepack.memory_history import (
    FINGERPRINT_KEY,
    Learned,
    learned_peak,
    manifest_peak,
    neutral_keys,
    package_fingerprint,
)
from ..savepack.package import SavePackage
from ..scheduling.policy import infeasible
from ..scheduling.specs import Placement
from ..tasks import (
    TaskKind,
    TaskRecord,
)
from .center_core import (
    ANALYZER_CPUS_ENV,
    CPUS_ENV,
    NO_CHECKPOINT,
    CenterCore,
    cpus_from_env,
)
from .center_memory import (
    DEFAULT_SOURCE,
    choose_memory,
)
from .center_retries import config_retries
from .notify import NOTIFY_KEY, NotifySettings, parse_notify

__all__ = ["SubmitOps"]

log = logging.getLogger(__name__)


class SubmitOps(CenterCore):
    """Queueing: training runs, continuations and analyzers."""

    # ------------------------------------------------------------------------------------------ submit
    def run_train(
        self,
        config_path: str,
        *,
        freq_path: str = "",
        memory_mb: int | None = None,
        description: str = "",
        no_save: bool = False,
        name_by_desc: bool = False,
        placement: str = "gpu",
        gpus: int | None = None,
        env: dict[str, str] | None = None,
        retries: int | None = None,
        priority: int = 0,
        no_preempt: bool = False,
    ) -> str:
        """Queue a new training run; returns its task id. The package is created now. ``env``: the
        submitter's environment for its ranks (:mod:`dlnest_ray.runenv`). ``retries``: how often a failed
        attempt may be retried (:mod:`.center_retries`; None: the config's ``retries``, else the default).
        ``priority``: higher runs first and may preempt lower (:mod:`.center_preempt`); ``no_preempt``:
        this run is never preempted."""
        spec_kw = self._spec_kw(placement, memory_mb, gpus, priority, no_preempt)
        env = checked_env(env)
        if retries is not None:
            retries = checked_retries(retries)
        if name_by_desc and not description:
            raise DlnestError("--name-by-desc needs --desc NAME")
        pkg = SavePackage(config_path, freq_path)  # parses and merges: errors name the file
        spec_kw["retries"], notify = self._config_settings(retries, pkg.args, env)
        neutral = neutral_keys(pkg.args, config_path)
        self._refuse_infeasible(spec_kw)
        # validates keys and code files before the folder exists, then snapshots the code
        path = pkg.save_to_new_dir(
            description if name_by_desc else "", no_save=no_save, description=description
        )
        fp = package_fingerprint(path, pkg.args, neutral)
        pkg.update_meta(**{FINGERPRINT_KEY: fp})
        spec_kw.update(self._memory_choice(spec_kw, fp, learned_peak(path.parent, fp, exclude=path)))
        name = Path(config_path).expanduser().resolve().parent.name
        with self._lock:
            task_id = self._enqueue(
                path,
                env=env,
                notify=notify,
                name=name,
                description=description,
                resume=False,
                ckpt_id=-1,
                **spec_kw,
            )
        self.schedule()
        return task_id

    def continue_train(
        self,
        record_path: str,
        *,
        ckpt_id: int = -1,
        description: str = "",
        memory_mb: int | None = None,
        placement: str = "gpu",
        gpus: int | None = None,
        env: dict[str, str] | None = None,
        retries: int | None = None,
        priority: int = 0,
        no_preempt: bool = False,
    ) -> str:
        """Queue the continuation of an existing package (from ``ckpt_id``, -1: latest valid). Without a
        ``description`` it keeps the package's. ``retries``, ``priority``, ``no_preempt``: as
        :meth:`run_train` (retries: the package's config)."""
        spec_kw = self._spec_kw(placement, memory_mb, gpus, priority, no_preempt)
        env = checked_env(env)
        if retries is not None:
            retries = checked_retries(retries)
        pkg = SavePackage.open(record_path)
        spec_kw["retries"], notify = self._config_settings(retries, pkg.args, env)
        description = description or package_description(pkg.meta)
        pkg.resolve_ckpt_id(ckpt_id)  # refuse a missing or damaged checkpoint now, not at launch
        self._refuse_infeasible(spec_kw)
        own = manifest_peak(pkg.manifest)  # a continuation needs what the run itself measured
        fp = str(pkg.meta.get(FINGERPRINT_KEY) or "")
        learned = None if own is None else Learned(peak_mb=own, runs=0)
        spec_kw.update(self._memory_choice(spec_kw, fp, learned, own=True))
        name = Path(str(pkg.meta.get("source_project") or pkg.path)).name
        assert pkg.path is not None
        with self._lock:  # the check and the enqueue together: one unfinished training per package
            busy = [
                r.task_id
                for r in self.store.tasks.values()
                if r.package == str(pkg.path) and not r.status.is_terminal() and r.kind is TaskKind.TRAIN
            ]
            if busy:
                raise PackageError(
                    f"{pkg.path} already has an unfinished task ({', '.join(busy)}); wait or delete it"
                )
            task_id = self._enqueue(
                pkg.path,
                env=env,
                notify=notify,
                name=name,
                description=description,
                resume=True,
                ckpt_id=ckpt_id,
                **spec_kw,
            )
        self.schedule()
        return task_id

    def analyze(
        self,
        record_path: str,
        *,
        ckpt_id: int = -1,
        scripts_dir: str = "",
        memory_mb: int | None = None,
        placement: str = "gpu",
        env: dict[str, str] | None = None,
        priority: int = 0,
    ) -> str:
        """Queue an analyzer of a package (DLNest's /analyze): it loads checkpoint ``ckpt_id`` (-1: latest
        valid; -2: none) once and then runs scripts from ``scripts_dir`` (default: the project's
        ``AnalyzeScripts/``, else the package's copy). Default memory: the run's measured peak, else 90%.
        ``priority``: as :meth:`run_train`; an analyzer is preempted only when idle."""
        if placement not in (Placement.GPU.value, Placement.CPU.value):
            raise DlnestError("an analyzer is one process: on one GPU, or with --cpu")
        env = checked_env(env)
        pkg = SavePackage.open(record_path)
        assert pkg.path is not None
        if ckpt_id != NO_CHECKPOINT:
            pkg.resolve_ckpt_id(ckpt_id)  # refuse a missing or damaged checkpoint now, not at load
        scripts = find_scripts_dir(pkg.path, pkg.meta, scripts_dir or None)
        if memory_mb is None and placement == Placement.GPU.value:
            memory_mb = analyzer_memory_mb(pkg.meta)
        spec_kw = self._spec_kw(placement, memory_mb, None, priority)
        self._refuse_infeasible(spec_kw)
        with self._lock:
            task_id = self._enqueue(
                pkg.path,
                env=env,
                kind=TaskKind.ANALYZE,
                name=pkg.path.name,
                resume=False,
                ckpt_id=ckpt_id,
                scripts=str(scripts),
                **spec_kw,
            )
        self.schedule()
        return task_id

    def _spec_kw(
        self,
        placement: str,
        memory_mb: int | None,
        gpus: int | None,
        priority: int = 0,
        no_preempt: bool = False,
    ) -> dict[str, Any]:
        priority = checked_priority(priority)
        try:
            kind = Placement(placement)
        except ValueError:
            raise DlnestError(f"unknown placement {placement!r}: use one of cpu, gpu, multi, ddp") from None
        if memory_mb is not None and memory_mb <= 0:
            raise DlnestError("--memory must be a positive number of MB")
        if gpus is not None and (gpus < 1 or not kind.spreads):
            raise DlnestError("--gpus K needs --ddp or --multi-gpu and K >= 1")
        if kind is Placement.CPU:
            memory_mb, gpus = None, None
        return {
            "placement": kind,
            "memory_mb": memory_mb,
            "gpus_requested": gpus,
            "priority": priority,
            "no_preempt": bool(no_preempt),
        }

    def _config_settings(
        self, given: int | None, args: dict[str, Any], env: dict[str, str]
    ) -> tuple[int, NotifySettings]:
        """What a run's config sets beside its code, checked before anything is created: its retries
        (``given``, i.e. --retries, else the config's ``retries``, else the default) and where word of its
        end goes (``notify``); its ``nice`` is checked here too (its ranks apply it)."""
        config_nice(args)
        from_config = config_retries(args)
        if given is not None:
            retries = given
        else:
            retries = self.store.settings.retries if from_config is None else from_config
        return retries, parse_notify(args.get(NOTIFY_KEY), env)

    def _memory_choice(
        self, spec_kw: dict[str, Any], fp: str, learned: Learned | None, *, own: bool = False
    ) -> dict[str, Any]:
        """The memory fields of a new training task (:func:`~.center_memory.choose_memory`)."""
        with self._lock:
            twins = [r for r in self.store.tasks.values() if fp and r.fingerprint == fp and r.peak_mb]
        choice = choose_memory(spec_kw, fp, learned, twins, self.store.settings.margin, own=own)
        if choice.get("memory_mb") is not None:
            try:
                self._refuse_infeasible({**spec_kw, "memory_mb": choice["memory_mb"]})
            except DlnestError:  # the look-alikes' number fits no GPU here: start from the default
                choice.update(memory_mb=None, memory_source=DEFAULT_SOURCE)
        return choice

    def _refuse_infeasible(self, spec_kw: dict[str, Any]) -> None:
        probe = TaskRecord(task_id="?", package="", submitted_at=0.0, **spec_kw)
        readings = self.devices.read({})  # only the totals matter here
        with self._lock:
            gpus, settings = self._gpu_states(readings), self._settings()
        reason = infeasible(probe.spec, gpus, settings)
        if reason is not None:
            raise DlnestError(f"this request can never run here: {reason}")

    def _enqueue(
        self,
        path: Path,
        *,
        env: dict[str, str],
        kind: TaskKind = TaskKind.TRAIN,
        notify: NotifySettings | None = None,
        save: bool = True,
        **fields: Any,
    ) -> str:
        """Add a task to the queue (hold the state lock); ``save=False``: the caller saves the state once
        after several (a sweep's trials)."""
        fields.setdefault(
            "cpus_per_rank", cpus_from_env(ANALYZER_CPUS_ENV if kind is TaskKind.ANALYZE else CPUS_ENV)
        )
        task_id = self.store.new_id(kind)
        self.envs.put(task_id, env)  # before the record: a queued task always finds its environment
        if notify:
            self.notify_store.put(task_id, notify)
        record = TaskRecord(
            task_id=task_id, kind=kind, package=str(path), submitted_at=self.clock(), **fields
        )
        self.store.tasks[task_id] = record
        if save:
            self.store.save()
        self.log.write(f"{task_id} queued: {path}")
        return task_id
