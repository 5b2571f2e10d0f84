"""The center: holds tasks and devices, runs the scheduling policy, launches runs, keeps the history.

A plain class, made a detached Ray actor where it is created (``actors/client.py``) and driven
in-process by tests with :class:`~dlnest_ray.actors.ports.FakeLauncher`. Every public method takes
one lock: the actor is threaded (a scheduling loop runs beside the calls).

Submitting validates the config and creates the save package *at submit time* (code snapshot,
``args.json``), so later edits to the project do not affect a queued run; a request that no node could
ever satisfy is refused before any package is made.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..devices import GpuInfo
from ..errors import DlnestError, PackageError
from ..records import DeviceInfo, SettingsInfo
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
from ..savepack.records import Segment
from ..scheduling.policy import DRAINING_REASON, decide, infeasible
from ..scheduling.specs import GpuState, Launch, NodeCpus, Placement, Preempt, Settings, Snapshot, Wait
from ..tasks import (
    NOT_STARTED_PHASES,
    TaskKind,
    TaskRecord,
    TaskStatus,
    preempted_label,
    requeue,
    transition,
)
from .center_memory import (
    DEFAULT_SOURCE,
    choose_memory,
    follow_twin,
    held_mb,
    holders_on,
    right_sized,
    with_peak,
)
from .center_preempt import back_in_queue, checked_priority, preempted
from .center_retries import checked_retries, config_retries, retry_decision, retry_reason_line
from .center_settings import CenterSettingsOps
from .notify import NOTIFY_KEY, Notice, Notifier, NotifySettings, NotifyStore, notice_reason, parse_notify
from .ports import DeviceSource, Launcher
from .store import LOG_FILE, CenterStore, EnvStore, LogBuffer

__all__ = ["ANALYZER_CPUS_ENV", "CPUS_ENV", "Center"]

log = logging.getLogger(__name__)

NO_CHECKPOINT = -2  # DLNest's "build the model without loading a checkpoint"
CPUS_ENV = "DLNEST_RAY_CPUS_PER_RANK"  # CPUs each rank holds (read where the center runs)
ANALYZER_CPUS_ENV = "DLNEST_RAY_ANALYZER_CPUS"  # CPUs each analyzer holds


def _cpus_from_env(name: str) -> float:
    raw = os.environ.get(name, "1")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DlnestError(f"{name}={raw!r} where the center runs: it must be a positive number of CPUs")
    return value


class _Unreadable:
    """The package could not be read (logged): its run is taken as started, never requeued."""


_UNREADABLE = _Unreadable()


def _package_segment(record: TaskRecord) -> Segment | _Unreadable | None:
    """The last segment a rank of this task recorded in its package (None: no rank ever started)."""
    try:
        return SavePackage.open(record.package).segment_of(record.task_id)
    except DlnestError as e:
        log.warning("%s: cannot read its package (%s): taken as started, never requeued", record.task_id, e)
        return _UNREADABLE


def _segment_peak(record: TaskRecord) -> int | None:
    """The peak (MB on one GPU) the task's last run segment recorded: it includes what an epoch that
    never reported (one that ran out of memory) reached. None when none was recorded or readable."""
    if record.kind is not TaskKind.TRAIN or not record.gpus:
        return None
    try:
        seg = SavePackage.open(record.package).segment_of(record.task_id)
    except DlnestError as e:
        log.debug("%s: no peak from its package: %s", record.task_id, e)
        return None
    return None if seg is None or not seg.peak_gpu_mb else math.ceil(seg.peak_gpu_mb)


def _ran_in_package(record: TaskRecord) -> bool:
    """Whether a rank of this training task started its run (it records a segment in the package)."""
    return _package_segment(record) is not None


def _never_started(record: TaskRecord, segment: Segment | _Unreadable | None) -> bool:
    """A RUNNING task none of whose ranks (or whose analyzer) ever started: it may go back to PENDING.
    ``segment``: what :func:`_package_segment` read for it."""
    if record.kind is TaskKind.ANALYZE:
        return record.phase in NOT_STARTED_PHASES
    return segment is None


class Center:
    """DLNest's server operations, plus the reports runs send back."""

    def __init__(
        self, *, home: Path, launcher: Launcher, devices: DeviceSource, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.RLock()
        self.store = CenterStore(home)
        self.envs = EnvStore(self.store.home)  # each task's environment, apart from center.json
        self.launcher = launcher
        self.devices = devices
        self.clock = clock
        self.log = LogBuffer(self.store.home / LOG_FILE)
        self.notify_store = NotifyStore(self.store.home)  # webhooks and mail logins, apart from center.json
        self.notifier = Notifier(on_failure=self.log.write)  # no thread until a notice is queued
        self._gpus: tuple[GpuState, ...] = ()
        # One pass at a time, so nothing launches between a pass's device reading and its decisions.
        # Device reads are remote calls: they are made with the state lock released, and schedule()
        # is only called by code that does not hold the state lock (else two threads could deadlock).
        self._pass_lock = threading.Lock()
        self.settings_ops = CenterSettingsOps(
            lock=self._lock,
            store=self.store,
            log=self.log,
            readings=self._readings,
            schedule=self.schedule,
            notify=self.notify_store,
        )
        self._reattach()

    # ------------------------------------------------------------------------------------------ settings
    def change_devices(self, enabled: list[str]) -> list[str]:
        """Enable exactly these ``node:gpuN`` labels (DLNest's changeDevices); returns the disabled ones."""
        return self.settings_ops.change_devices(enabled)

    def change_delay(self, seconds: float) -> None:
        self.settings_ops.change_delay(seconds)

    def change_max_task_per_device(self, n: int) -> None:
        self.settings_ops.change_max_task_per_device(n)

    def change_margin(self, margin: float) -> None:
        self.settings_ops.change_margin(margin)

    def change_retries(self, retries: int) -> None:
        """A run's retries when neither ``--retries`` nor its config's ``retries`` key says (>= 0)."""
        self.settings_ops.change_retries(retries)

    def change_notify_webhook(self, url: str) -> None:
        """The cluster's default webhook for word when a task ends ("" clears it); must be http(s)."""
        self.settings_ops.change_notify_webhook(url)

    def get_settings(self) -> SettingsInfo:
        return self.settings_ops.get_settings()

    @property
    def delay_s(self) -> float:
        return self.store.settings.delay_s

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
        spec_kw["retries"] = self._retries(retries, pkg.args)
        notify = parse_notify(pkg.args.get(NOTIFY_KEY), env)
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
        spec_kw["retries"] = self._retries(retries, pkg.args)
        notify = parse_notify(pkg.args.get(NOTIFY_KEY), env)
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

    def _retries(self, given: int | None, args: dict[str, Any]) -> int:
        """A run's retries: ``given`` (--retries), else its config's ``retries``, else the default."""
        if given is not None:
            return given
        from_config = config_retries(args)
        return self.store.settings.retries if from_config is None else from_config

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
        **fields: Any,
    ) -> str:
        fields.setdefault(
            "cpus_per_rank", _cpus_from_env(ANALYZER_CPUS_ENV if kind is TaskKind.ANALYZE else CPUS_ENV)
        )
        task_id = self.store.new_id(kind)
        self.envs.put(task_id, env)  # before the record: a queued task always finds its environment
        if notify:
            self.notify_store.put(task_id, notify)
        record = TaskRecord(
            task_id=task_id, kind=kind, package=str(path), submitted_at=self.clock(), **fields
        )
        self.store.tasks[task_id] = record
        self.store.save()
        self.log.write(f"{task_id} queued: {path}")
        return task_id

    # ------------------------------------------------------------------------------------------ delete
    def del_task(self, task_id: str) -> str:
        """Pending: removed from the queue. Running: asked to stop; it ends CANCELLED when fully gone."""
        with self._lock:
            record = self._get(task_id)
            if record.status is TaskStatus.PENDING:
                self._set(
                    transition(record, TaskStatus.CANCELLED, at=self.clock(), error="deleted while pending")
                )
                self.log.write(f"{task_id} deleted while pending")
                return f"{task_id} removed from the queue"
            if record.status.is_active():
                self._set(replace(record, cancel_requested=True))
                self.launcher.cancel(task_id)
                self.log.write(f"{task_id} cancelling")
                return f"{task_id} is being stopped"
            return f"{task_id} already ended ({record.status})"

    # ------------------------------------------------------------------------------------------ down / up
    def drain(self, cancel_running: bool = False) -> dict[str, list[str]]:
        """``down`` has begun: launch nothing from now on (persisted, so a center restart keeps draining)
        and, with ``cancel_running``, stop every running task. A run stopped this way before any of its
        ranks started goes back to PENDING, as does one whose cluster goes away before it started.
        Returns ``{"running": [...], "pending": [...]}`` as they were."""
        with self._lock:
            if not self.store.draining:
                self.store.draining = True
                self.log.write("draining: `dlnest-ray down` has begun, nothing new starts")
            running = list(self._running())
            pending = [r.task_id for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
            for r in self.store.tasks.values():
                if r.status is TaskStatus.PENDING and r.wait_reason != DRAINING_REASON:
                    self._set(replace(r, wait_reason=DRAINING_REASON), save=False)
            if cancel_running:
                for r in running:
                    if not r.cancel_requested:
                        self._set(replace(r, cancel_requested=True, cancelled_by_down=True), save=False)
                        self.launcher.cancel(r.task_id)
                        self.log.write(f"{r.task_id} cancelling (down --force)")
            self.store.save()
            return {"running": [r.task_id for r in running], "pending": pending}

    def open_queue(self) -> bool:
        """``up``: end a drain (launches resume). Returns whether the center was draining."""
        with self._lock:
            was = self.store.draining
            if was:
                self.store.draining = False
                self.store.save()
                self.log.write("queue open: launches resume")
        if was:
            self.schedule()
        return was

    @property
    def draining(self) -> bool:
        return self.store.draining

    # ------------------------------------------------------------------------------------------ reports
    def task_finished(
        self,
        task_id: str,
        status: str,
        error: str = "",
        output_tail: list[str] | None = None,
        reason: str = "",
    ) -> None:
        """A run's supervisor reports its end, after its ranks are gone and its placement group removed.
        ``reason``: why a FAILED attempt ended when it may be retried (``node lost``, ``worker died``,
        ``killed by signal 9``, ``placement group lost``, ``out of memory``; "" for the user's own error):
        while retries are left it goes back to PENDING as a continuation (:mod:`.center_retries`)."""
        resume_from = (
            self._resume_point(task_id)
            if (status == TaskStatus.FAILED.value and reason) or status == TaskStatus.PREEMPTED.value
            else None
        )
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is None or record.status.is_terminal():
                return  # a duplicate report (e.g. after a restart): the first one counted
            try:
                final = TaskStatus(status)
            except ValueError:
                raise DlnestError(f"unknown task status {status!r} reported for {task_id}") from None
            if (
                record.cancelled_by_down
                and final is not TaskStatus.SUCCEEDED
                and record.kind is TaskKind.TRAIN
                and not _ran_in_package(record)
            ):  # `down --force` stopped it before any rank began: it waits for the next `up`
                self._set(requeue(record, reason=DRAINING_REASON))
                self.log.write(f"{task_id} back in the queue: stopped by `down` before it started")
                return
            if record.cancel_requested and final is not TaskStatus.SUCCEEDED:
                final = TaskStatus.CANCELLED
            if final is TaskStatus.PREEMPTED:  # it stopped for a higher-priority task: it waits again
                back = back_in_queue(with_peak(record, _segment_peak(record)), resume_from)
                self._set(back)
                where = "from the checkpoint it took" if back.resume else "from the start"
                by = record.preempted_by
                self.log.write(f"{task_id} back in the queue: preempted by {by}, resumes {where}")
                final = TaskStatus.PENDING
            record = with_peak(record, _segment_peak(record))  # e.g. the peak an out-of-memory run hit
            tail = tuple(output_tail or ())
            if final is TaskStatus.FAILED:
                decision = retry_decision(
                    record,
                    error=error,
                    reason=reason,
                    resume_from=resume_from,
                    margin=self.store.settings.margin,
                    largest_mb=max((g.total_mb for g in self._gpus), default=0),
                )
                if decision.log_line:
                    self.log.write(decision.log_line)
                if decision.record is not None:  # RUNNING → PENDING: it never ended, nothing to announce
                    self._set(decision.record)
                    final = TaskStatus.PENDING
                error = decision.error
            if final is not TaskStatus.PENDING:
                self._set(transition(record, final, at=self.clock(), error=error, output_tail=tail))
                self.log.write(f"{task_id} {final}" + (f": {error}" if error else ""))
        self.schedule()

    def _resume_point(self, task_id: str) -> tuple[bool, int] | None:
        """Where a retry of ``task_id`` starts (read without the state lock: it verifies checkpoints):
        (True, -1) from the latest valid checkpoint; (False, -1) over again in the same package when it has
        none; None when its attempt never started (it keeps its own start) or the package is unreadable."""
        with self._lock:
            record = self.store.tasks.get(task_id)
        if record is None or record.kind is not TaskKind.TRAIN:
            return None
        try:
            pkg = SavePackage.open(record.package)
            if pkg.segment_of(task_id) is None:
                return None
            return (True, -1) if pkg.latest_valid_id() is not None else (False, -1)
        except DlnestError as e:
            log.warning("%s: cannot read its package for a retry (%s): it keeps its own start", task_id, e)
            return None

    def rank_memory(self, task_id: str, rank: int, epoch: int, peak_mb: int | None) -> int:
        """A rank of a running task has ended epoch ``epoch`` with ``peak_mb`` (the largest over its ranks,
        MB on one GPU; None on CPU). Keeps the peak; after the first epoch an auto task is right-sized and
        pending twins follow its peak. Returns the rank's reservation now (its cap; 0: none)."""
        changed = False
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is None or not record.status.is_active():
                return 0
            margin = self.store.settings.margin
            updated = with_peak(record, peak_mb)
            sized = right_sized(updated, margin)
            if sized is not None:
                updated = sized
                self.log.write(
                    f"{task_id} right-sized after epoch {epoch}: {record.mb_per_gpu} → {sized.mb_per_gpu} MB"
                    f" per GPU (peak {sized.peak_mb} MB × {margin:g})"
                )
            if updated != record:
                self._set(updated, save=False)
                changed = sized is not None and sized.mb_per_gpu < record.mb_per_gpu
                for other in list(self.store.tasks.values()):
                    follows = follow_twin(other, updated, margin)
                    if follows is not None:
                        self._set(follows, save=False)
                        self.log.write(
                            f"{other.task_id} now asks {follows.memory_mb} MB: {follows.memory_source}"
                        )
                        changed = True
                self.store.save()
            cap = updated.mb_per_gpu
        if changed:
            self._memory_freed()
        return cap

    def _memory_freed(self) -> None:
        """Reservations went down or estimates changed: place waiting tasks into what was freed."""
        self.schedule()

    def task_phase(self, task_id: str, phase: str) -> None:
        """A running task's supervisor says where it is (e.g. waiting for Ray to free resources)."""
        with self._lock:
            record = self.store.tasks.get(task_id)
            if record is not None and record.status.is_active() and record.phase != phase:
                now = self.clock()
                started = record.running_at
                if started is None and phase not in NOT_STARTED_PHASES:
                    started = now  # its ranks (or analyzer) run now: the `ran` clock starts
                self._set(replace(record, phase=phase, running_at=started, phase_at=now))

    # ------------------------------------------------------------------------------------------ schedule
    def _settings(self) -> Settings:
        s = self.store.settings
        return Settings(max_tasks_per_device=s.max_tasks_per_device, starvation_s=s.starvation_s)

    def _running(self) -> list[TaskRecord]:
        """Launched and not ended: RUNNING, or PREEMPTED and stopping (they hold their share)."""
        return [r for r in self.store.tasks.values() if r.status.is_active()]

    def _reserved(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for r in self._running():
            if r.node is not None:
                for g in r.gpus:
                    out.setdefault(r.node, {})[g] = out.setdefault(r.node, {}).get(g, 0) + held_mb(r)
        return out

    def _readings(self) -> dict[str, tuple[GpuInfo, ...]]:
        """Every node's GPUs: remote calls, so made without the state lock."""
        with self._lock:
            reserved = self._reserved()
        return self.devices.read(reserved)

    def _gpu_states(self, readings: dict[str, tuple[GpuInfo, ...]]) -> tuple[GpuState, ...]:
        """The policy's view of ``readings`` with this center's reservations (hold the state lock)."""
        now, delay = self.clock(), self.store.settings.delay_s
        disabled = set(self.store.settings.disabled)
        running = self._running()
        gpus = []
        for node, infos in sorted(readings.items()):
            for info in infos:
                on_gpu = [r for r in running if r.node == node and info.index in r.gpus]
                recent = 0
                if (
                    not self.devices.counts_reservations
                ):  # NVML cannot see memory a fresh run has yet to allocate
                    recent = sum(
                        r.mb_per_gpu
                        for r in on_gpu
                        if r.started_at is not None and now - r.started_at < delay
                    )
                gpus.append(
                    GpuState(
                        node=node,
                        index=info.index,
                        total_mb=info.total_mb,
                        free_mb=info.free_mb,
                        tasks=len(on_gpu),
                        enabled=f"{node}:gpu{info.index}" not in disabled,
                        recent_mb=recent,
                        holders=holders_on(node, info.index, on_gpu, now),
                    )
                )
        self._gpus = tuple(gpus)
        return self._gpus

    def schedule(self) -> list[Launch | Wait | Preempt]:
        """One scheduling pass: launch what fits, record a wait reason for the rest.
        Call it without holding the state lock."""
        with self._pass_lock:
            while True:
                with self._lock:
                    if not any(r.status is TaskStatus.PENDING for r in self.store.tasks.values()):
                        return []
                    if self.store.draining:  # nothing may launch: no device reading needed
                        return self._pass({}, {})[0]
                readings = self._readings()
                cpus = self._cpu_readings()
                ending = self._ending_attempts()
                with self._lock:
                    decisions, relaunch = self._pass(readings, cpus, ending)
                if not relaunch:  # a failed launch freed its GPUs for the tasks behind it: pass again
                    return decisions

    def _cpu_readings(self) -> dict[str, float]:
        """Free CPUs per node (remote calls: without the state lock); launched tasks whose ranks Ray has
        not placed yet are counted as taken."""
        with self._lock:
            starting: dict[str, float] = {}
            held: dict[str, float] = {}
            for r in self._running():
                if r.node is not None:
                    into = starting if r.phase in NOT_STARTED_PHASES else held
                    into[r.node] = into.get(r.node, 0.0) + r.cpus
        return self.devices.read_cpus(starting, held)

    def _ending_attempts(self) -> set[str]:
        """Pending retries whose last attempt's supervisor still exists (it reports, then exits): a new
        one, named after the task too, cannot start before it is gone. A remote call: without the lock."""
        with self._lock:
            pending = [r for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
            retries = {r.task_id for r in pending if r.attempt > 1 or r.preemptions}
        return retries & self.launcher.alive() if retries else set()

    def _retry_soon(self) -> None:
        """A retry waits for its last attempt's supervisor to exit: pass again shortly (the Ray center
        wakes its scheduling loop; in-process, the next call to :meth:`schedule` does)."""

    def _pass(
        self,
        readings: dict[str, tuple[GpuInfo, ...]],
        cpus: dict[str, float],
        ending: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[list[Launch | Wait | Preempt], bool]:
        pending = [r for r in self.store.tasks.values() if r.status is TaskStatus.PENDING]
        snapshot = Snapshot(
            gpus=self._gpu_states(readings),
            settings=self._settings(),
            now=self.clock(),
            cpus=tuple(NodeCpus(node=n, free=free) for n, free in sorted(cpus.items())),
            draining=self.store.draining,
        )
        decisions = decide([r.spec for r in pending], snapshot)
        relaunch = False
        for d in decisions:
            record = self.store.tasks[d.task_id]
            if isinstance(d, Preempt):
                self._preempt(record, d)
                continue
            if isinstance(d, Wait) or d.task_id in ending:
                why = d.reason if isinstance(d, Wait) else "its last attempt is still ending"
                if record.attempt > 1 and record.attempt_reasons:  # a retry says so first
                    retry = retry_reason_line(record.attempt, record.attempts, record.attempt_reasons[-1])
                    why = f"{retry}; {why}"
                if record.preempted_by:  # as does a preempted run
                    why = f"preempted by {record.preempted_by}; {why}"
                if record.wait_reason != why:
                    self._set(replace(record, wait_reason=why), save=False)
                if not isinstance(d, Wait):
                    self._retry_soon()
                continue
            totals = [g.total_mb for g in self._gpus if g.node == d.node and g.index in d.gpus]
            running = transition(
                record,
                TaskStatus.RUNNING,
                at=self.clock(),
                node=d.node,
                gpus=d.gpus,
                mb_per_gpu=d.mb_per_gpu,
                first_mb_per_gpu=d.mb_per_gpu,
                gpu_total_mb=min(totals, default=0),
                phase="starting",
                phase_at=self.clock(),
                preempted_by="",
            )
            self._set(running)
            try:
                self.launcher.launch(running, self.envs.get(running.task_id))
            except Exception as e:  # the run could not even start: say why, free its reservation
                log.exception("%s: launch failed", d.task_id)
                self._set(
                    transition(running, TaskStatus.FAILED, at=self.clock(), error=f"launch failed: {e}")
                )
                self.log.write(f"{d.task_id} launch failed: {e}")
                relaunch = True
                continue
            where = (
                f"CPU ({d.node or 'any node'})"
                if not d.gpus
                else f"{d.node} GPU {','.join(map(str, d.gpus))} ({d.mb_per_gpu} MB each)"
            )
            self.log.write(f"{d.task_id} launched on {where}")
        self.store.save()
        return decisions, relaunch

    def _preempt(self, record: TaskRecord, d: Preempt) -> None:
        """Stop ``d.victims`` for ``record`` (state lock held): each becomes PREEMPTED and its supervisor is
        told (a run stops at the end of its epoch, after a checkpoint; an analyzer closes at once)."""
        for vid in d.victims:
            victim = self.store.tasks.get(vid)
            if victim is None or victim.status is not TaskStatus.RUNNING:
                continue
            stopped = preempted(victim, record.task_id, self.clock())
            self._set(stopped, save=False)
            how = "stops at the end of its epoch" if victim.kind is TaskKind.TRAIN else "closes now (idle)"
            higher = f"priority {record.priority} > {victim.priority}"
            self.log.write(f"{vid} preempted for {record.task_id} ({higher}): {how}")
            try:
                self.launcher.preempt(vid)
            except Exception as e:  # its supervisor is gone: its end is reported or found on restart
                log.exception("%s: preempt failed", vid)
                self.log.write(f"{vid}: could not tell it to stop: {e}")
            self._notify(stopped, final=False)
        if record.wait_reason != d.reason:
            self._set(replace(record, wait_reason=d.reason), save=False)

    # ------------------------------------------------------------------------------------------ restart
    def _reattach(self) -> None:
        """After a restart: runs whose supervisor lives on stay RUNNING (it reports to the new center);
        a run whose supervisor is gone ended while the center was down: take its end from the package."""
        alive = self.launcher.alive()
        for record in self._running():
            if record.task_id in alive:
                self.log.write(f"{record.task_id} re-attached")
                if record.cancel_requested:
                    self.launcher.cancel(record.task_id)
                elif record.status is TaskStatus.PREEMPTED:  # told again: the word may not have arrived
                    self.launcher.preempt(record.task_id)
                continue
            seg = _package_segment(record)  # read once: it says both whether and how the run ended
            if _never_started(record, seg):  # the cluster went away before its run began: it waits again
                reason = DRAINING_REASON if self.store.draining else ""
                self._set(requeue(record, reason=reason), save=False)
                self.log.write(
                    f"{record.task_id} back in the queue: its supervisor ended before the run began"
                )
                continue
            if isinstance(seg, Segment) and seg.status == "preempted" and not record.cancel_requested:
                self._set(back_in_queue(record, self._resume_point(record.task_id)), save=False)
                self.log.write(f"{record.task_id} back in the queue: preempted (found after a restart)")
                continue
            status, error = TaskStatus.FAILED, "its supervisor ended while the center was down"
            if isinstance(seg, Segment) and seg.status == "succeeded":
                status, error = TaskStatus.SUCCEEDED, ""
            elif isinstance(seg, Segment) and seg.error:  # unreadable: its end stays unknown, FAILED as above
                error = seg.error
            elif isinstance(seg, Segment) and not seg.has_ended and self._node_lost(record):
                # its node went away with the run and its supervisor: a retry, as any lost node
                decision = retry_decision(
                    record,
                    error=f"its node {record.node} was lost",
                    reason="node lost",
                    resume_from=self._resume_point(record.task_id),
                    margin=self.store.settings.margin,
                    largest_mb=0,
                )
                if decision.log_line:
                    self.log.write(decision.log_line)
                if decision.record is not None:
                    self._set(decision.record, save=False)
                    continue
                error = decision.error
            self._set(transition(record, status, at=self.clock(), error=error), save=False)
            self.log.write(f"{record.task_id} {status} (found after a restart)")
        self.store.save()
        self.schedule()  # runs that ended while the center was down freed their GPUs

    def _node_lost(self, record: TaskRecord) -> bool:
        """Whether ``record``'s node is no longer among the cluster's nodes (a remote read)."""
        try:
            return record.node is not None and record.node not in self.devices.read({})
        except Exception as e:  # the nodes cannot be read: say nothing rather than guess
            log.warning("%s: reading the cluster's nodes: %s: %s", record.task_id, type(e).__name__, e)
            return False

    # ------------------------------------------------------------------------------------------ queries
    def _get(self, task_id: str) -> TaskRecord:
        record = self.store.tasks.get(task_id)
        if record is None:
            raise DlnestError(f"no task {task_id!r}; `dlnest-ray tasks --all` lists them")
        return record

    def _set(self, record: TaskRecord, *, save: bool = True) -> None:
        before = self.store.tasks.get(record.task_id)
        self.store.tasks[record.task_id] = record
        if save:
            self.store.save()
        if record.status.is_terminal():  # its environment served its runs: nothing secret lingers
            if before is not None and not before.status.is_terminal():
                self._notify(record)
            self.envs.drop(record.task_id)

    def _notify(self, record: TaskRecord, *, final: bool = True) -> None:
        """Hand word of a training task's end (or, not ``final``, of its preemption) to the notifier (its
        webhook: the run's own, else the cluster's; its e-mail: the run's); at its end, drop the run's
        notification settings. Never raises, never waits: the notifier reads the metrics and sends in its
        thread."""
        try:
            own = self.notify_store.get(record.task_id)
            webhook = own.webhook or self.notify_store.webhook
            if record.kind is TaskKind.TRAIN and (webhook or own.email):
                self.notifier.notify(
                    Notice(
                        task_id=record.task_id,
                        status=str(record.status),
                        reason=notice_reason(record.error) if final else preempted_label(record),
                        error=record.error[:2000],
                        package=record.package,
                        name=record.name,
                        attempt=int(getattr(record, "attempt", 1)),
                        webhook=webhook,
                        email=own.email,
                    )
                )
        except Exception as e:  # an unreadable settings file: say so, the task's end stands
            log.exception("%s: no notice", record.task_id)
            self.log.write(f"notify: no notice for {record.task_id}: {e}")
        finally:
            if final:
                self.notify_store.drop(record.task_id)

    def close(self, wait_s: float = 10.0) -> None:
        """Give notices still being sent up to ``wait_s`` seconds (the center is going away)."""
        self.notifier.close(wait_s)

    def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
        """Running and pending tasks in submit order; with ``include_finished``, every task."""
        with self._lock:
            return [r for r in self.store.tasks.values() if include_finished or not r.status.is_terminal()]

    def get_devices_info(self) -> list[DeviceInfo]:
        readings = self._readings()
        with self._lock:
            gpus = self._gpu_states(readings)
            running = self._running()
            reserved = self._reserved()
            return [
                DeviceInfo(
                    node=g.node,
                    gpu=g.index,
                    total_mb=g.total_mb,
                    free_mb=g.free_mb,
                    reserved_mb=reserved.get(g.node, {}).get(g.index, 0),
                    tasks=tuple(r.task_id for r in running if r.node == g.node and g.index in r.gpus),
                    enabled=g.enabled,
                )
                for g in gpus
            ]

    def get_dlnest_output(self, offset: int = 0) -> dict[str, Any]:
        with self._lock:
            return self.log.read(offset)

    def clear(self) -> None:
        """Empty the center's messages (DLNest's clear); the file moves aside to ``center.log.1``."""
        with self._lock:
            self.log.clear()
