"""The training loop: DLNest's order, made safe.

Per batch: move data to the device, ``run_one_step``, visualize if ``need_visualize`` (rank 0 only
under DDP). After the epoch: ``command_line_output``, validate if ``need_validation`` (all ranks), save
if ``need_save_model`` (rank 0 writes, every rank waits at a barrier until the state is captured),
holding it in the consistent track if ``hold_this_checkpoint``; then a metrics row (and TensorBoard
scalars when the config enables them), ``after_one_epoch``, and on while ``need_continue_train``.
Every stage has before/after hooks; ``"Skip"`` skips the stage.

A user exception anywhere ends the run: ``train_aborting`` prints the traceback into the output,
``after_all`` still runs, pending checkpoint writes finish, the process group is destroyed, and
:class:`~dlnest_ray.errors.TrainingFailed` is raised.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import DlnestError, TrainingFailed
from ..savepack.metrics import MetricsLog, list_marks
from ..savepack.package import SavePackage
from .aliases import overrides
from .bases import ModelBase
from .build import Components, call_hook, checkpoint_state, init_components, new_components
from .distributed import (
    DEFAULT_PG_TIMEOUT_S,
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
from .output import ConsoleSink, OutputTee
from .status import EnvType, Phase, RunningStatus
from .tensorboard import EpochScalars

__all__ = ["StopRequested", "TrainObserver", "TrainOptions", "TrainResult", "move_to_device", "train"]


class TrainObserver(Protocol):
    """Progress callbacks for a foreground display (called on rank 0 only)."""

    def epoch_started(self, epoch: int, total_steps: int | None) -> None: ...
    def step_done(self, epoch: int, iter: int) -> None: ...
    def epoch_finished(self, epoch: int, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    resume: bool = False
    ckpt_id: int = -1  # with resume: -1 = latest valid checkpoint
    cpu: bool = False
    gpus: tuple[int, ...] | None = None
    console: bool | ConsoleSink = False  # also show the output on the terminal
    capture_output: bool = True  # fd-level tee into _output*.txt
    observer: TrainObserver | None = None
    async_checkpoints: bool = True
    description: str = ""
    stop_file: str | None = None  # when this file exists, the run stops as if interrupted (dlnest-ray del)
    task_id: str | None = None  # the queued task this run belongs to, recorded in its segment


class StopRequested(KeyboardInterrupt):
    """The run was asked to stop (its stop file appeared): handled like Ctrl-C. Once the run has wound
    down, its message says where it stopped (``stopped at epoch 2 by request; checkpoint 1 kept``)."""


class _StopCheck:
    """Looks for the stop file: between steps at most twice a second in a single process; under DDP only
    at epoch starts, agreed by all ranks (a rank that stopped alone would hang its peers' collectives)."""

    INTERVAL_S = 0.5

    def __init__(self, path: str | None, status: RunningStatus) -> None:
        self.path = path
        self.ddp = status.env is EnvType.DDP
        self.status = status
        self._next = 0.0

    def step(self) -> None:
        if self.path is None or self.ddp:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.INTERVAL_S
            if os.path.exists(self.path):
                raise StopRequested(f"stop requested ({self.path})")

    def epoch(self) -> None:
        if self.path is None:
            return
        flag = os.path.exists(self.path)
        if self.ddp:
            import torch
            import torch.distributed as tdist

            t = torch.tensor([1.0 if flag else 0.0], device=self.status.device)
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            flag = bool(t.item())
        if flag:
            raise StopRequested(f"stop requested ({self.path})")


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    package: Path
    finished_epoch: int
    global_step: int
    last_checkpoint: int | None


def move_to_device(data: Any, device: Any) -> Any:
    """Tensors, also nested in lists/tuples/namedtuples/dicts, moved to ``device``; other values kept."""
    if hasattr(data, "to") and hasattr(data, "device"):
        return data.to(device, non_blocking=True)
    if isinstance(data, list):
        return [move_to_device(d, device) for d in data]
    if isinstance(data, tuple):
        moved = [move_to_device(d, device) for d in data]
        return type(data)(*moved) if hasattr(data, "_fields") else tuple(moved)
    if isinstance(data, dict):
        out = copy.copy(data)  # keeps the dict's type and, for a defaultdict, its factory
        for k, v in data.items():
            out[k] = move_to_device(v, device)
        return out
    return data


def train(package: str | Path, options: TrainOptions | None = None) -> TrainResult:
    """Train (or resume) the run in ``package`` in this process; the CWD is the package meanwhile."""
    opts = options or TrainOptions()
    pkg = SavePackage.open(package)
    assert pkg.path is not None
    dist = dist_env_from(os.environ)
    rank = dist.rank if dist else -1
    out_path = pkg.output_path(rank if dist else None)
    old_cwd = os.getcwd()
    os.chdir(pkg.path)
    try:
        if opts.capture_output:
            if opts.task_id:  # a queued task's part of the output starts here (`watch` shows only it)
                _mark_output(out_path, opts.task_id)
            with OutputTee(out_path, console=opts.console):
                return _Run(pkg, opts, dist).run()
        return _Run(pkg, opts, dist).run()
    finally:
        os.chdir(old_cwd)


def _mark_output(path: Path, task_id: str) -> None:
    """Append the task's marker line (on a line of its own) to the output file it is about to write."""
    from ..savepack.outputs import marker_line

    lead = ""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            lead = "" if f.read(1) == b"\n" else "\n"
    except OSError:  # no file yet, or an empty one
        pass
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{lead}{marker_line(task_id)}\n")


class _Run:
    def __init__(self, pkg: SavePackage, opts: TrainOptions, dist: Any) -> None:
        assert pkg.path is not None
        self.pkg, self.opts, self.dist = pkg, opts, dist
        self.path: Path = pkg.path
        self.args = pkg.args
        self.seed = pkg.seed if pkg.seed is not None else 0
        self.status: RunningStatus = RunningStatus()
        self.last_ckpt: int | None = None
        self.tb: EpochScalars | None = None  # rank 0's TensorBoard writer when the config enables it

    def _notify(self, method: str, *args: Any) -> None:
        if self.opts.observer is not None and self.status.is_main:
            getattr(self.opts.observer, method)(*args)

    def run(self) -> TrainResult:
        self.status = choose_device(cpu=self.opts.cpu, gpus=self.opts.gpus, dist=self.dist)
        st = self.status
        if self.dist is not None:
            timeout = self.args.get("ddp_timeout_s", DEFAULT_PG_TIMEOUT_S)
            init_process_group(self.dist, st, timeout_s=float(timeout))
        segment: int | None = None
        comps: Components | None = None
        failure: BaseException | None = None
        try:
            seed_everything(self.seed + max(st.rank, 0))
            state = self._load_state()
            if st.is_main:
                self.pkg.remove_temp_files()
                segment = self.pkg.begin_segment(self._segment_info(state))
            first_epoch = int(state.get("finished_epoch", -1)) + 1 if state else 0
            self.tb = EpochScalars.for_run(
                self.args, self.path, main=st.is_main, first_epoch=first_epoch, resume=state is not None
            )
            classes = load_user_classes(self.args, self.path)
            comps = new_components(classes, self.args, st, package=self.pkg)
            init_components(comps, classes, self.args, st, state=state)
            if state is not None:
                self._restore_rng(state, comps)
            if not comps.skipped_all:
                self._loop(comps)
        except BaseException as e:  # user code may raise anything; KeyboardInterrupt is a cancel
            failure = e
            stop = isinstance(e, KeyboardInterrupt)  # a stop is no crash: no traceback of ours for it
            if comps is not None and (not stop or _overrides_aborting(comps.life_cycle)):
                self._guard(functools.partial(comps.life_cycle.train_aborting, e))
            elif not stop:
                import traceback

                traceback.print_exception(type(e), e, e.__traceback__)
        if comps is not None:
            err = self._guard(lambda: call_hook(comps.life_cycle, "after", "all"))
            failure = failure or err
        if self.tb is not None:
            self._guard(self.tb.close)  # TensorBoard events are a view: failing to close them fails no run
        flush_err = self._guard(self.pkg.flush) if st.is_main else None
        failure = failure or flush_err
        self._guard(destroy_process_group)
        fe = comps.finished_epoch if comps else -1
        if segment is not None:
            outcome = (
                "succeeded"
                if failure is None
                else ("interrupted" if isinstance(failure, KeyboardInterrupt) else "failed")
            )
            self._guard(
                lambda: self.pkg.end_segment(
                    segment,
                    status=outcome,
                    finished_epoch=fe,
                    error=None if failure is None else _describe(failure),
                    peak_gpu_mb=_peak_gpu_mb(st.device),
                )
            )
        if isinstance(failure, KeyboardInterrupt):
            raise self._stopped(failure)
        if failure is not None:
            out = self.pkg.output_path(st.rank if self.dist else None)
            if isinstance(failure, DlnestError) and not isinstance(failure, TrainingFailed):
                raise TrainingFailed(f"{failure} (see {out})") from failure
            raise TrainingFailed(f"training failed: {_describe(failure)} (traceback in {out})") from failure
        return TrainResult(
            package=self.path,
            finished_epoch=fe,
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
        line = f"{how} at epoch {self.status.epoch} by request; {kept}"
        print(f"[dlnest-ray] {line}", flush=True)
        return StopRequested(line) if isinstance(stop, StopRequested) else stop

    @staticmethod
    def _guard(fn: Callable[[], Any]) -> BaseException | None:
        try:
            fn()
        except BaseException as e:
            import traceback

            traceback.print_exception(type(e), e, e.__traceback__)
            return e
        return None

    def _load_state(self) -> dict[str, Any] | None:
        if not self.opts.resume:
            return None
        ckpt = self.pkg.resolve_ckpt_id(self.opts.ckpt_id)
        state = self.pkg.state_dict(ckpt, device="cpu")
        self.resumed_from = ckpt
        if self.status.is_main:
            self.pkg.set_ckpt_id(ckpt + 1)  # forget (and delete) the abandoned branch after it
            MetricsLog(self.path).drop_after(int(state.get("finished_epoch", -1)))
            print(f"[dlnest-ray] resuming from checkpoint {ckpt} (epoch {state.get('finished_epoch')})")
        barrier(self.status)  # no rank starts before rank 0 has settled the package
        return state

    def _restore_rng(self, state: dict[str, Any], comps: Components) -> None:
        st = self.status
        if st.is_main and "rng" in state:
            restore_rng(state["rng"])
        else:  # other ranks: independent, reproducible streams for this segment
            seed_everything(self.seed + max(st.rank, 0) + 7919 * (comps.finished_epoch + 1))

    def _segment_info(self, state: dict[str, Any] | None) -> dict[str, Any]:
        st = self.status
        devices = [str(st.device)]
        if st.device is not None and st.device.type == "cuda":
            import torch

            devices = [f"{st.device}: {torch.cuda.get_device_name(st.device)}"]
        return {
            "kind": "resume" if state is not None else "train",
            "from_checkpoint": getattr(self, "resumed_from", None),
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
        }

    # ------------------------------------------------------------------------------------ the loop
    def _loop(self, c: Components) -> None:
        lc, model, args, st = c.life_cycle, c.model, self.args, self.status
        metrics = MetricsLog(self.path) if st.is_main else None
        epoch = c.finished_epoch + 1
        st.epoch = epoch
        if call_hook(lc, "before", "train"):
            call_hook(lc, "after", "train")
            return
        move = st.env is not EnvType.CPU
        device = st.device
        stop = _StopCheck(self.opts.stop_file, st)
        while True:
            stop.epoch()
            marks = list_marks(c.log)  # the metrics row takes the epoch's mean of what lists gain now
            if not call_hook(lc, "before", "one_epoch"):
                st.phase = Phase.TRAINING
                loader = c.train_loader
                sampler = getattr(loader, "sampler", None)
                if sampler is not None and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                total = _len_or_none(loader)
                self._notify("epoch_started", epoch, total)
                for it, data in enumerate(loader):
                    st.iter = it
                    if not call_hook(lc, "before", "model_one_step"):
                        model.run_one_step(move_to_device(data, device) if move else data, c.log, it, epoch)
                        c.global_step += 1
                        st.global_step = c.global_step
                    call_hook(lc, "after", "model_one_step")
                    if lc.need_visualize(epoch, it, c.log, args):
                        if st.is_main and not call_hook(lc, "before", "visualize"):
                            model.visualize(epoch, it, c.log)
                        call_hook(lc, "after", "visualize")
                    self._notify("step_done", epoch, it)
                    stop.step()
                barrier(st)
                c.finished_epoch = epoch
                lc.command_line_output(epoch, c.log, args)
                if lc.need_validation(epoch, c.log, args):
                    if not call_hook(lc, "before", "validation"):
                        st.phase = Phase.VALIDATING
                        self._validate(c)
                    call_hook(lc, "after", "validation")
                st.phase = Phase.WAITING
                barrier(st)
                if not call_hook(lc, "before", "save_model") and lc.need_save_model(epoch, c.log, args):
                    hold = bool(lc.hold_this_checkpoint(epoch, c.log, args))
                    if st.is_main:
                        state = checkpoint_state(c, seed=self.seed, rng=capture_rng())
                        self.last_ckpt = self.pkg.save_checkpoint(
                            state,
                            hold=hold,
                            epoch=epoch,
                            step=c.global_step,
                            wait=not self.opts.async_checkpoints,
                        )
                    barrier(st)  # every rank waits until rank 0 has captured the state
                call_hook(lc, "after", "save_model")
                if metrics is not None:
                    row = metrics.append(
                        epoch=epoch, step=c.global_step, wall_time=time.time(), log=c.log, marks=marks
                    )
                    if self.tb is not None:
                        self.tb.add_epoch(row)
                    self._notify("epoch_finished", epoch, row)
            call_hook(lc, "after", "one_epoch")
            if not lc.need_continue_train(c.finished_epoch, c.log, args):
                break
            epoch = c.finished_epoch + 1
            st.epoch = epoch
        call_hook(lc, "after", "train")

    def _validate(self, c: Components) -> None:
        model, lc, st = c.model, c.life_cycle, self.status
        if overrides(model, "validate", ModelBase) or not (
            overrides(model, "validate_a_batch", ModelBase) or overrides(model, "validateABatch", ModelBase)
        ):
            model.validate(c.val_loader, c.log)
            return
        model.validation_init()
        move = st.env is not EnvType.CPU
        for it, data in enumerate(c.val_loader):
            st.iter = it
            if not call_hook(lc, "before", "validate_a_batch"):
                model.validate_a_batch(move_to_device(data, st.device) if move else data, it)
            call_hook(lc, "after", "validate_a_batch")
        if not call_hook(lc, "before", "validation_analyze"):
            model.validation_analyze(c.log)
        call_hook(lc, "after", "validation_analyze")


def _overrides_aborting(life_cycle: Any) -> bool:
    from .bases import LifeCycleBase

    return overrides(life_cycle, "train_aborting", LifeCycleBase) or overrides(
        life_cycle, "trainAborting", LifeCycleBase
    )


def _len_or_none(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _peak_gpu_mb(device: Any) -> int | None:
    """Torch's peak reserved GPU memory in this process, in MB (None on CPU): an analyzer's default."""
    if device is None or getattr(device, "type", "") != "cuda":
        return None
    import torch

    return math.ceil(torch.cuda.max_memory_reserved(device) / 2**20)
