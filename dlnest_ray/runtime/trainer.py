"""The training loop: DLNest's order, made safe.

Per batch: move data to the device, ``run_one_step``, visualize if ``need_visualize`` (rank 0 only
under DDP). After the epoch: ``command_line_output``, validate if ``need_validation`` (all ranks), save
if ``need_save_model`` (rank 0 writes, every rank waits at a barrier until the state is captured),
holding it in the consistent track if ``hold_this_checkpoint``; then a metrics row (and TensorBoard
scalars when the config enables them), ``after_one_epoch``, and on while ``need_continue_train``.
Every stage has before/after hooks; ``"Skip"`` skips the stage. The config's plugins
(:mod:`dlnest_ray.plugins`) run beside the hooks.

GPU memory (:mod:`.memory`): a rank on a GPU (or a fake one) is capped at ``memory_cap_mb`` from the
start. Once an epoch has ended (training, validation, save) its peak, the largest over the ranks, goes
into the metrics row (``gpu_peak_mb``) and to ``memory_report``, whose answer is the new cap; the peak
window then starts anew. The segment records the cap at its start (``reserved_mb``) and the largest peak
(``peak_gpu_mb``). Torch's ``OutOfMemoryError`` ends the run with one line saying what to resubmit with.

A user exception anywhere ends the run: ``train_aborting`` prints the traceback into the output,
``after_all`` still runs, pending checkpoint writes finish, the process group is destroyed, and
:class:`~dlnest_ray.errors.TrainingFailed` is raised. A requested stop (:class:`StopRequested`) ends
with one line saying where it stopped. A preempted run (its preempt file appeared) finishes the epoch it
is in, saves a checkpoint of it even if ``need_save_model`` would not have (pinned: kept out of the tracks'
eviction until the run has resumed past it), and — unless ``need_continue_train`` ends the run there
anyway — stops with :class:`PreemptRequested`. The checkpoint is taken where any epoch's is, so resuming
from it continues exactly as the uninterrupted run would have.

User code gets its own copy of the merged config (``args``); dlnest-ray reads its settings from its
copy, so code that changes or replaces ``args`` cannot change what dlnest-ray does.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DlnestError, TrainingFailed
from ..plugins.base import PluginContext, PluginSet
from ..runenv import ENV_NAMES_VAR
from ..savepack.metrics import MetricsLog, list_marks
from ..savepack.package import SavePackage
from ..savepack.records import Segment
from .aliases import overrides
from .bases import ModelBase, skipped
from .build import Components, checkpoint_state, init_components, new_components, training_state
from .compat import TaskProcessView
from .distributed import (
    DEFAULT_PG_TIMEOUT_S,
    DistEnv,
    barrier,
    capture_rng,
    choose_device,
    destroy_process_group,
    dist_env_from,
    init_process_group,
    restore_rng,
    seed_everything,
)
from .loader import load_user_classes
from .loop_parts import (
    PreemptRequested,
    StopCheck,
    StopRequested,
    TrainObserver,
    TrainOptions,
    TrainResult,
    call_visualize,
    describe,
    len_or_none,
    mark_output,
    max_over_ranks,
    move_to_device,
    overrides_aborting,
)
from .memory import MemoryMeter, meter_for, out_of_memory_error, out_of_memory_line, out_of_memory_peak
from .output import OutputTee
from .status import EnvType, Phase, RunningStatus
from .tensorboard import EpochScalars

__all__ = [
    "PreemptRequested",
    "StopRequested",
    "TrainObserver",
    "TrainOptions",
    "TrainResult",
    "move_to_device",
    "train",
]

log = logging.getLogger(__name__)


def train(package: str | Path, options: TrainOptions | None = None) -> TrainResult:
    """Train (or resume) the run in ``package`` in this process; the CWD is the package meanwhile."""
    opts = options or TrainOptions()
    pkg = SavePackage.open(package)
    assert pkg.path is not None
    dist = dist_env_from(os.environ)
    out_path = pkg.output_path(dist.rank if dist else None)
    old_cwd = os.getcwd()
    os.chdir(pkg.path)
    try:
        if opts.capture_output:
            if opts.task_id:  # a queued task's part of the output starts here (`watch` shows only it)
                mark_output(out_path, opts.task_id, opts.attempt, opts.retry_reason)
            with OutputTee(out_path, console=opts.console):
                return Trainer(pkg, opts, dist).run()
        return Trainer(pkg, opts, dist).run()
    finally:
        os.chdir(old_cwd)


class Trainer:
    """One run segment in this process: :meth:`setup`, then ``try: fit() finally: close()``."""

    def __init__(self, pkg: SavePackage, opts: TrainOptions, dist: DistEnv | None) -> None:
        assert pkg.path is not None
        self.pkg, self.opts, self.dist = pkg, opts, dist
        self.path: Path = pkg.path
        self.args = pkg.args  # dlnest-ray's own copy of the config ...
        self.user_args: dict[str, Any] = copy.deepcopy(pkg.args)  # ... and the one user code gets
        self.seed = pkg.seed if pkg.seed is not None else 0
        self.status = RunningStatus()
        self.state: dict[str, Any] | None = None  # the checkpoint resumed from
        self.resumed_from: int | None = None
        self.segment: int | None = None
        self.comps: Components | None = None
        self.plugins = PluginSet([])  # the config's plugins, loaded with the components
        self.metrics: MetricsLog | None = None
        self.tb: EpochScalars | None = None  # rank 0's TensorBoard writer when the config enables it
        self.last_ckpt: int | None = None
        self.failure: BaseException | None = None
        self.meter: MemoryMeter | None = None  # this rank's GPU memory (None on a plain CPU run)
        self.run_peak: int | None = None  # the largest peak measured in this segment (all ranks)
        self.failure_line: str | None = None  # the out-of-memory line the run fails with
        self.preempting = False  # the run was preempted: this epoch's checkpoint is forced, then it stops

    # ------------------------------------------------------------------------------------ lifecycle
    def run(self) -> TrainResult:
        """Set up, train, close; raises :class:`TrainingFailed` (or the stop) after closing."""
        try:
            self.setup()
            self.fit()
        except BaseException as e:  # user code may raise anything; KeyboardInterrupt is a stop
            self.failure = e
            self._note_out_of_memory(e)
            self._aborting(e)
        self.close()
        return self._result()

    def setup(self) -> None:
        """Device and process group, seed, the resumed state, the segment record, the components."""
        self.status = st = choose_device(cpu=self.opts.cpu, gpus=self.opts.gpus, dist=self.dist)
        if self.dist is not None:
            timeout = self.args.get("ddp_timeout_s", DEFAULT_PG_TIMEOUT_S)
            init_process_group(self.dist, st, timeout_s=float(timeout))
        seed_everything(self.seed + max(st.rank, 0))
        self.state = self._load_state()
        self._open_records()
        self.meter = meter_for(st.device, self.args, os.environ)
        if self.meter is not None and self.opts.memory_cap_mb is not None:
            self.meter.set_cap(self.opts.memory_cap_mb)  # before user code allocates anything
        self._build_components()

    def _open_records(self) -> None:
        """The segment in ``_package.json``, the metrics log and TensorBoard (what rank 0 writes)."""
        st, state = self.status, self.state
        if st.is_main:
            self.pkg.remove_temp_files()
            self.segment = self.pkg.begin_segment(self._segment_info())
        first_epoch = int(state.get("finished_epoch", -1)) + 1 if state else 0
        self.metrics = MetricsLog(self.path) if st.is_main else None
        # a run that starts over in a package that has rows (a retry before any checkpoint) owns every
        # epoch from 0: the rows and TensorBoard events of the abandoned start go
        over = state is None and self.metrics is not None and bool(self.metrics.rows)
        if over and self.metrics is not None:
            self.metrics.drop_after(-1)
        self.tb = EpochScalars.for_run(
            self.args, self.path, main=st.is_main, first_epoch=first_epoch, resume=state is not None or over
        )

    def _build_components(self) -> None:
        """The user's objects and the plugins, in DLNest's order (:mod:`.build`)."""
        st = self.status
        classes = load_user_classes(self.args, self.path)
        view = TaskProcessView(self)
        self.comps = comps = new_components(classes, self.user_args, st, package=self.pkg, task=view)
        self.plugins = self._load_plugins()
        self.plugins.before_all()
        init_components(comps, classes, self.user_args, st, state=self.state)
        if self.state is not None:
            self._restore_rng(comps)
        self.plugins.run_started(comps.log, self.state is not None)

    def fit(self) -> None:
        """The epochs, DLNest's order (module doc)."""
        c = self._components()
        if c.skipped_all:
            return
        lc, st = c.life_cycle, self.status
        st.epoch = c.finished_epoch + 1
        st.global_step = c.global_step  # a resumed run's first step already sees the checkpoint's count
        if skipped(lc.before_train()):
            lc.after_train()
            return
        stop = StopCheck(self.opts.stop_file, st, self.opts.preempt_file)
        while True:
            stop.epoch()
            self._one_epoch(c, stop)
            if not lc.need_continue_train(c.finished_epoch, c.log, self.user_args):
                break
            if self.preempting:
                raise PreemptRequested(f"preempted ({self.opts.preempt_file})")
            st.epoch = c.finished_epoch + 1
        lc.after_train()
        self.plugins.train_finished(c.log)

    def close(self) -> None:
        """Every teardown, each guarded (a failing one is printed and, first of all, the run's failure):
        ``after_all``, the memory cap, plugins, TensorBoard, pending checkpoint writes, the process group,
        the segment."""
        comps, st = self.comps, self.status
        if comps is not None:
            self._guard(comps.life_cycle.after_all)
        if self.meter is not None and self.meter.cap_mb is not None:  # a foreground process goes on
            self._guard(functools.partial(self.meter.set_cap, None), fails_run=False)
        self._guard(self.plugins.close, fails_run=False)  # plugins never fail a run
        if self.tb is not None:
            self._guard(self.tb.close, fails_run=False)  # TensorBoard events are a view
        if st.is_main:
            self._guard(self.pkg.flush)
        self._guard(destroy_process_group)
        if self.segment is not None:
            self._guard(self._end_segment)

    # ------------------------------------------------------------------------------------ one epoch
    def _one_epoch(self, c: Components, stop: StopCheck) -> None:
        """``before_one_epoch``; unless skipped, train, validate, save, measure and record; then
        ``after_one_epoch``."""
        lc = c.life_cycle
        marks = list_marks(c.log)  # the metrics row takes the epoch's mean of what lists gain now
        if not skipped(lc.before_one_epoch()):
            self._train_epoch(c, stop)
            if self.meter is not None:
                self.meter.after_training(c.finished_epoch)  # a fake meter allocates here
            self.preempting = self.preempting or stop.preempt_due()  # every rank, at the same point
            self._maybe_validate(c)
            self._maybe_save(c)
            peak = self._epoch_peak()
            self._record_epoch(c, marks, peak)
            self._report_memory(c.finished_epoch, peak)
        lc.after_one_epoch()

    def _train_epoch(self, c: Components, stop: StopCheck) -> None:
        """Every batch of the train loader, then (all ranks done) the epoch counts as finished."""
        st = self.status
        st.phase = Phase.TRAINING
        epoch = st.epoch
        loader = c.train_loader
        sampler = getattr(loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        observer = self._observer()
        if observer is not None:
            observer.epoch_started(epoch, len_or_none(loader))
        for it, data in enumerate(loader):
            st.iter = it
            self._train_step(c, epoch, it, data)
            self.plugins.after_step(epoch, it, c.log)
            if observer is not None:
                observer.step_done(epoch, it)
            stop.step()
        barrier(st)
        c.finished_epoch = epoch
        c.life_cycle.command_line_output(epoch, c.log, self.user_args)

    def _train_step(self, c: Components, epoch: int, it: int, data: Any) -> None:
        """One batch: the step (unless skipped) and, when ``need_visualize`` says so, the visualization."""
        lc, st = c.life_cycle, self.status
        if not skipped(lc.before_model_one_step()):
            c.model.run_one_step(self._on_device(data), c.log, it, epoch)
            c.global_step += 1
            st.global_step = c.global_step
        lc.after_model_one_step()
        if lc.need_visualize(epoch, it, c.log, self.user_args):
            if st.is_main and not skipped(lc.before_visualize()):
                call_visualize(c.model, epoch, it, c.log)
            lc.after_visualize()

    def _maybe_validate(self, c: Components) -> None:
        """Validate when ``need_validation`` says so (every rank), between its hooks."""
        lc = c.life_cycle
        if not lc.need_validation(c.finished_epoch, c.log, self.user_args):
            return
        if not skipped(lc.before_validation()):
            self.status.phase = Phase.VALIDATING
            self._validate(c)
        lc.after_validation()

    def _maybe_save(self, c: Components) -> None:
        """``before_save_model`` every epoch; a checkpoint when ``need_save_model`` says so — or the run is
        being preempted (then pinned, and written before the run stops) — (rank 0 writes, the others wait
        until it has captured the state); ``after_save_model``."""
        lc, st, epoch = c.life_cycle, self.status, c.finished_epoch
        st.phase = Phase.WAITING
        barrier(st)
        wanted = not skipped(lc.before_save_model()) and lc.need_save_model(epoch, c.log, self.user_args)
        if wanted or self.preempting:
            hold = bool(wanted and lc.hold_this_checkpoint(epoch, c.log, self.user_args))
            if st.is_main:
                self.last_ckpt = self.pkg.save_checkpoint(
                    checkpoint_state(c, seed=self.seed, rng=capture_rng()),
                    hold=hold,
                    epoch=epoch,
                    step=c.global_step,
                    wait=self.preempting or not self.opts.async_checkpoints,
                    pin=self.preempting,
                )
            barrier(st)  # every rank waits until rank 0 has captured the state
        lc.after_save_model()

    def _record_epoch(self, c: Components, marks: dict[str, tuple[int, int]], peak: int | None) -> None:
        """The epoch's metrics row (rank 0: Parquet, TensorBoard, the display), with ``gpu_peak_mb`` when
        a peak was measured, then the plugins."""
        if self.metrics is not None:
            log = c.log if peak is None else {**c.log, "gpu_peak_mb": peak}
            row = self.metrics.append(
                epoch=c.finished_epoch, step=c.global_step, wall_time=time.time(), log=log, marks=marks
            )
            if self.tb is not None:
                self.tb.add_epoch(row)
            observer = self._observer()
            if observer is not None:
                observer.epoch_finished(c.finished_epoch, row)
        self.plugins.after_epoch(c.finished_epoch, c.log)

    def _validate(self, c: Components) -> None:
        """``validate``, or DLNest's three phases for a model with ``validate_a_batch`` and no ``validate``
        (a camelCase override counts: it is routed to the snake_case name)."""
        model = c.model
        if overrides(model, "validate", ModelBase) or not overrides(model, "validate_a_batch", ModelBase):
            model.validate(c.val_loader, c.log)
            return
        lc, st = c.life_cycle, self.status
        model.validation_init()
        for it, data in enumerate(c.val_loader):
            st.iter = it
            if not skipped(lc.before_validate_a_batch()):
                model.validate_a_batch(self._on_device(data), it)
            lc.after_validate_a_batch()
        if not skipped(lc.before_validation_analyze()):
            model.validation_analyze(c.log)
        lc.after_validation_analyze()

    # ------------------------------------------------------------------------------------ memory
    def _epoch_peak(self) -> int | None:
        """The epoch's peak, the largest over the ranks (every DDP rank takes part, meter or not)."""
        peak = max_over_ranks(self.meter.peak_mb() if self.meter is not None else None, self.status)
        if peak is not None:
            self.run_peak = peak if self.run_peak is None else max(self.run_peak, peak)
        return peak

    def _report_memory(self, epoch: int, peak: int | None) -> None:
        """``memory_report`` (every rank), its new cap applied at once; a new peak window starts."""
        report, meter = self.opts.memory_report, self.meter
        if report is not None:
            cap = report(epoch, peak)
            if cap is not None and meter is not None and cap != meter.cap_mb:
                meter.set_cap(cap)
        if meter is not None:
            meter.reset()

    def _note_out_of_memory(self, e: BaseException) -> None:
        """For torch's ``OutOfMemoryError`` on a measured GPU: the peak it implies (kept for the segment)
        and the one line the run fails with, printed into the output."""
        meter, oom = self.meter, out_of_memory_error(e)
        if meter is None or oom is None:
            return
        peak = out_of_memory_peak(self._meter_peak(), meter.cap_mb, str(oom))
        if peak is not None:
            self.run_peak = peak if self.run_peak is None else max(self.run_peak, peak)
        self.failure_line = out_of_memory_line(
            who=self.opts.task_id or "the run",
            gpu=meter.gpu,
            cap_mb=meter.cap_mb,
            peak_mb=peak,
            margin=self.opts.memory_margin,
            n_gpus=self._gpu_count(),
        )
        print(f"[dlnest-ray] {self.failure_line}", flush=True)

    def _meter_peak(self) -> int | None:
        """This rank's peak since the last reset, or None (no meter, or a GPU too broken to say)."""
        if self.meter is None:
            return None
        try:
            return self.meter.peak_mb()
        except Exception as e:  # after a CUDA error the device may not answer: the segment still ends
            log.debug("could not read the GPU memory peak: %s", describe(e))
            return None

    def _gpu_count(self) -> int:
        """The run's GPUs: its ranks under DDP, the visible GPUs of a multi-GPU process, else one."""
        st = self.status
        if st.env is EnvType.DDP:
            return st.world_size
        if st.env is EnvType.GPUS:
            return max(1, len([g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]))
        return 1

    def _segment_peak(self) -> int | None:
        """The segment's peak: the largest of its epochs' (over the ranks) and what rank 0 saw since."""
        peaks = [p for p in (self.run_peak, self._meter_peak()) if p is not None]
        return max(peaks) if peaks else None

    # ------------------------------------------------------------------------------------ helpers
    def _components(self) -> Components:
        assert self.comps is not None, "setup() builds the components"
        return self.comps

    def _on_device(self, data: Any) -> Any:
        """A batch moved to the run's device (on the CPU, as it is)."""
        st = self.status
        return data if st.env is EnvType.CPU else move_to_device(data, st.device)

    def _load_plugins(self) -> PluginSet:
        context = PluginContext(
            args=self.user_args, package=self.path, status=self.status, task_id=self.opts.task_id
        )
        return PluginSet.load(self.args, context)

    def _observer(self) -> TrainObserver | None:
        """The foreground progress display, on the main rank only."""
        return self.opts.observer if self.status.is_main else None

    def _aborting(self, e: BaseException) -> None:
        """A stop is no crash: no traceback of ours for it (the user's own ``train_aborting`` still runs)."""
        stop = isinstance(e, KeyboardInterrupt)
        comps = self.comps
        if comps is not None and (not stop or overrides_aborting(comps.life_cycle)):
            self._guard(functools.partial(comps.life_cycle.train_aborting, e), fails_run=False)
        elif not stop:
            traceback.print_exception(type(e), e, e.__traceback__)
        if not stop:
            self.plugins.train_aborting(e)

    def _guard(self, fn: Callable[[], Any], *, fails_run: bool = True) -> None:
        """Run a teardown step; an exception is printed and becomes the run's failure if it had none."""
        try:
            fn()
        except BaseException as e:
            traceback.print_exception(type(e), e, e.__traceback__)  # into the run's output file
            log.debug("teardown step %r failed: %s", fn, describe(e))
            if fails_run and self.failure is None:
                self.failure = e

    def _end_segment(self) -> None:
        assert self.segment is not None
        failure = self.failure
        outcome = (
            "succeeded"
            if failure is None
            else "preempted"
            if isinstance(failure, PreemptRequested)
            else "interrupted"
            if isinstance(failure, KeyboardInterrupt)
            else "failed"
        )
        self.pkg.end_segment(
            self.segment,
            status=outcome,
            finished_epoch=self.comps.finished_epoch if self.comps else -1,
            error=None if failure is None else self.failure_line or describe(failure),
            peak_gpu_mb=self._segment_peak(),
        )

    def _result(self) -> TrainResult:
        failure, comps = self.failure, self.comps
        if isinstance(failure, KeyboardInterrupt):
            raise self._stopped(failure)
        if failure is not None and self.failure_line is not None:
            raise TrainingFailed(self.failure_line) from failure
        if failure is not None:
            out = self.pkg.output_path(self.status.rank if self.dist else None)
            if isinstance(failure, DlnestError) and not isinstance(failure, TrainingFailed):
                raise TrainingFailed(f"{failure} (see {out})") from failure
            raise TrainingFailed(f"training failed: {describe(failure)} (traceback in {out})") from failure
        return TrainResult(
            package=self.path,
            finished_epoch=comps.finished_epoch if comps else -1,
            global_step=comps.global_step if comps else 0,
            last_checkpoint=self.last_ckpt,
        )

    def _stopped(self, stop: KeyboardInterrupt) -> KeyboardInterrupt:
        """Say in one line where the run stopped and what it kept (rank 0), and return the exception to
        raise, carrying that line."""
        how = "stopped" if isinstance(stop, StopRequested) else "interrupted"
        kept = "no checkpoint kept"
        if self.status.is_main:
            ids = self.pkg.checkpoint_ids()  # pending writes were flushed: these are durable
            kept = f"checkpoint {ids[-1]} kept" if ids else "no checkpoint kept"
        if isinstance(stop, PreemptRequested):
            done = self.comps.finished_epoch if self.comps else -1
            line = f"preempted after epoch {done}; {kept}"
            print(f"[dlnest-ray] {line}", flush=True)
            return PreemptRequested(line)
        line = f"{how} at epoch {self.status.epoch} by request; {kept}"
        print(f"[dlnest-ray] {line}", flush=True)
        return StopRequested(line) if isinstance(stop, StopRequested) else stop

    def _load_state(self) -> dict[str, Any] | None:
        if not self.opts.resume:
            return None
        ckpt = self.pkg.resolve_ckpt_id(self.opts.ckpt_id)
        state = training_state(self.pkg.state_dict(ckpt, device="cpu"), ckpt)
        self.resumed_from = ckpt
        if self.status.is_main:
            self.pkg.set_ckpt_id(ckpt + 1)  # forget (and delete) the abandoned branch after it
            MetricsLog(self.path).drop_after(int(state.get("finished_epoch", -1)))
            print(f"[dlnest-ray] resuming from checkpoint {ckpt} (epoch {state.get('finished_epoch')})")
        barrier(self.status)  # no rank starts before rank 0 has settled the package
        return state

    def _restore_rng(self, comps: Components) -> None:
        st, state = self.status, self.state or {}
        if st.is_main and "rng" in state:
            restore_rng(state["rng"])
        else:  # other ranks: independent, reproducible streams for this segment
            seed_everything(self.seed + max(st.rank, 0) + 7919 * (comps.finished_epoch + 1))

    def _segment_info(self) -> Segment:
        """The segment rank 0 records when the run starts (``end_segment`` completes it)."""
        st, state = self.status, self.state
        devices = [str(st.device)]
        if st.device is not None and st.device.type == "cuda":
            import torch

            devices = [f"{st.device}: {torch.cuda.get_device_name(st.device)}"]
        names = os.environ.get(ENV_NAMES_VAR, "")
        return Segment.from_json(
            {  # unset ones are recorded as null, as they always were
                "kind": "resume" if state is not None else "train",
                "from_checkpoint": self.resumed_from,
                "start_epoch": (int(state.get("finished_epoch", -1)) + 1) if state else 0,
                "env": str(st.env),
                "world_size": st.world_size,
                "devices": devices,
                "host": socket.gethostname(),
                "node": os.environ.get("DLNEST_RAY_NODE"),  # set by the run supervisor on a cluster
                "pid": os.getpid(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "description": self.opts.description,
                "task_id": self.opts.task_id,
                "seed": self.seed,
                "reserved_mb": self.opts.memory_cap_mb,
                "environment": sorted(
                    filter(None, names.split(","))
                ),  # the submitter's variables, names only
                **self._attempt_info(),
            }
        )

    def _attempt_info(self) -> dict[str, Any]:
        """A queued task's attempt for its segment (and, on a retry, why the one before ended); nothing
        for a run outside the queue."""
        if not self.opts.task_id:
            return {}
        info: dict[str, Any] = {"attempt": self.opts.attempt, "warm_start": self.opts.warm_start}
        if self.opts.attempt > 1:
            info["retry_reason"] = self.opts.retry_reason
        return info
