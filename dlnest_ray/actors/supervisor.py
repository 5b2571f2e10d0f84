"""The run supervisor: one detached actor per task; a run's is named after it (``T_0007``).

It creates a placement group pinned to the node the policy chose, one bundle per rank
(``{"CPU": c, "GPU": mb / gpu_total_mb}``), starts one Ray task per rank with ``CUDA_VISIBLE_DEVICES``
set to the GPU the policy chose (Ray's own setting is disabled: it would pack two DDP ranks onto one
card, ray#48012, and ignores memory used by other processes), waits for them, and reports the end
to the center — after every rank is gone and the placement group removed, so the reservation is
released only when the GPUs really are free.

Preempt: the ranks' preempt file is written; they stop at the end of the epoch they are in, after a
checkpoint of it, and the supervisor reports PREEMPTED (no grace period: an epoch takes what it takes).
A run preempted before its ranks started, and an analyzer, stop at once.

Cancel: the ranks' stop file is written (they stop between steps, or at the next epoch under DDP,
running ``train_aborting``/``after_all``); after a grace period the rank tasks are force-cancelled and
their process groups killed. A run killed mid-save leaves its last valid checkpoint loadable (writes
are atomic and verified).

An analyzer task (``A_0003``) is supervised the same way, with one bundle: instead of rank tasks the
supervisor (named ``A_0003.supervisor``) starts the detached analyzer actor ``A_0003`` in the group,
waits for it to load, and keeps it until the task is deleted (then closes and kills it) or it dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

from ..errors import RunPreempted, RunStopped
from ..linebuffer import read_prefixed
from ..runenv import ENV_NAMES_VAR
from ..savepack.layout import (
    analyze_output_path,
    output_path,
    output_prefix,
    parse_pid_record,
    pid_file,
    preempt_file,
    stop_file,
)
from ..scheduling.specs import DEFAULT_MARGIN, Placement
from ..tasks import TaskKind, TaskRecord, TaskStatus
from .calls import task_error_cause
from .names import NAMESPACE, get_center
from .rank import REPORT_TIMEOUT_S, rank_task
from .ray_ports import alive_nodes, full_node_id, monitor_for
from .warm import TAKE_TIMEOUT_S

__all__ = ["GRACE_ENV", "RunSupervisor"]

log = logging.getLogger(__name__)

GRACE_ENV = "DLNEST_RAY_CANCEL_GRACE_S"
REPORT_PATIENCE_S = 600.0
EXIT_GRACE_S = 15.0  # how long a rank's worker gets to exit by itself (and report its task) after its run
# Ray's accounting of a GPU a dlnest-ray task uses: a token share. The center's policy is what holds memory
# (reservation and measured peak, for the whole run; right-sizing lowers it), and Ray cannot shrink a
# placement group's share; the token still keeps Ray from handing the whole GPU to other Ray work.
RAY_GPU_SHARE = 0.001
EVENTS_FLUSH_S = 2.0  # Ray sends task events about once a second: let this actor's go out before it ends


# Why an attempt ended, when it may be retried (the center's rules: actors/center_retries.py)
NODE_LOST = "node lost"
WORKER_DIED = "worker died"
PG_LOST = "placement group lost"
OUT_OF_MEMORY = "out of memory"
# How long a dead worker's node gets to show as gone: Ray's default verdict on a crashed node takes ~15 s
# (5 health checks 3 s apart); a node whose monitor still answers counts as alive at once.
NODE_CHECK_S = 20.0
_OOM_LINE = re.compile(r"\bran out of (?:its \d+ MB|memory) on ")  # runtime.memory.out_of_memory_line
_SIGNAL_NUMBER = re.compile(r"\bkilled by signal (\d+)\b", re.IGNORECASE)
_SIGNAL_NAME = re.compile(r"\b(?:received|killed by|by signal)\s+(SIG[A-Z]+)\b")


class _NodeLost(Exception):
    """The run's node left the cluster before its ranks could be placed there."""


def failure_reason(message: str, *, died: bool) -> str:
    """Why a rank's attempt ended, from what Ray raised: ``died`` (its worker, actor or node is gone:
    ``killed by signal N`` when the message tells the signal, else ``worker died``), or a rank's own
    error line (``out of memory`` for the run's out-of-memory line, else "": the user's code failed,
    which no retry would change). The run's node being gone is found by the supervisor, not here."""
    if not died:
        return OUT_OF_MEMORY if _OOM_LINE.search(message) else ""
    number = _SIGNAL_NUMBER.search(message)
    if number is not None:
        return f"killed by signal {int(number[1])}"
    name = _SIGNAL_NAME.search(message)
    if name is not None and name[1] in signal.Signals.__members__:
        return f"killed by signal {int(signal.Signals[name[1]])}"
    return WORKER_DIED


def _group_placed(pg: Any) -> bool:
    """Whether placement group ``pg`` is still placed (True when unknown: no group, or Ray does not say)."""
    if pg is None:
        return True
    from ray.util.placement_group import placement_group_table

    try:
        return placement_group_table(pg).get("state") in (None, "CREATED")
    except Exception as e:
        log.info("reading a placement group's state: %s: %s", type(e).__name__, e)
        return True


def _tail(path: Path, n: int = 20) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=n)]
    except OSError:
        return []


class RunSupervisor:
    def __init__(self, record: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.record = TaskRecord.from_json(record)
        self.user_env = dict(env or {})  # the submitter's environment: every rank gets it
        self._cancel = threading.Event()
        self._preempt = threading.Event()
        self._state = "starting"
        self.grace_s = float(os.environ.get(GRACE_ENV, "20"))
        self.cpus = self.record.cpus_per_rank  # decided at submit: the policy counted these CPUs
        self._warm: Any = None  # the warm rank process (module warm) the rank runs in, if any
        # Supervise from the constructor, not from a method the center calls: Ray fate-shares a call
        # with its caller, so a center killed right after a launch would take the call with it.
        threading.Thread(target=self._main, name=f"supervise-{self.record.task_id}", daemon=True).start()

    def cancel(self) -> None:
        self._cancel.set()

    def preempt(self) -> None:
        """Stop for a higher-priority task (module doc): the ranks' preempt file, which they look for at
        the end of each epoch, is written now (it is removed when the supervisor ends)."""
        self._preempt.set()
        if self.record.kind is TaskKind.TRAIN:
            marker = preempt_file(self.record.package, self.record.task_id)
            marker.parent.mkdir(exist_ok=True)
            marker.touch()

    def state(self) -> str:
        return self._state

    def _set_state(self, state: str) -> None:
        """Remember the phase and tell the center, without waiting (it may be restarting)."""
        self._state = state
        try:
            get_center().task_phase.remote(task_id=self.record.task_id, phase=state)
        except Exception as e:  # the center restarts: the phase is only for display, the end is reported
            log.info("%s: could not tell the center its phase %r: %s", self.record.task_id, state, e)

    # ---------------------------------------------------------------------------------------- main
    def _main(self) -> None:
        """Supervise the run to its end, report it, and remove this actor."""
        import ray

        status, error, failing_rank, reason = TaskStatus.FAILED, "", 0, ""
        pg = None
        try:
            pg = self._placement_group()
            if pg is None and self._preempt.is_set() and not self._cancel.is_set():
                status, error = TaskStatus.PREEMPTED, "preempted before it started"
            elif pg is None:
                status, error = TaskStatus.CANCELLED, "cancelled before it started"
            elif self.record.kind is TaskKind.ANALYZE:
                status, error = self._run_analyzer(pg)
            else:
                status, error, failing_rank, reason = self._run_ranks(pg)
        except _NodeLost as e:
            error, reason = str(e), NODE_LOST
        except Exception as e:
            log.exception("%s: supervising failed", self.record.task_id)
            error = f"{type(e).__name__}: {e}"
            if self.record.node and not self._cancel.is_set() and self._node_gone(wait_s=0.0):
                reason = NODE_LOST  # e.g. its node went away before the group could be pinned to it
        finally:
            if pg is not None:
                self._remove(pg)
            for marker in (stop_file, preempt_file):  # no stop was asked for: nothing to remove
                with contextlib.suppress(FileNotFoundError):
                    marker(self.record.package, self.record.task_id).unlink()
        if reason in (WORKER_DIED, PG_LOST) and self._node_gone(wait_s=NODE_CHECK_S):
            reason = NODE_LOST  # the worker or the group went with its node
        tail = self._failure_tail(failing_rank) if status is not TaskStatus.SUCCEEDED else []
        self._report(status, error, tail, reason if status is TaskStatus.FAILED else "")
        time.sleep(EVENTS_FLUSH_S)  # killed with unsent events, its calls would read FAILED in Ray's view
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _failure_tail(self, rank: int, n: int = 20) -> list[str]:
        rec = self.record
        if rec.kind is TaskKind.ANALYZE:
            prefix = output_prefix(rec.task_id, rec.submitted_at)
            lines = read_prefixed(analyze_output_path(rec.package), prefix)["lines"]
            return [str(line) for line in lines[-n:]]
        return _tail(output_path(rec.package, None if rec.world_size == 1 else rank), n)

    def _run_analyzer(self, pg: Any) -> tuple[TaskStatus, str]:
        """Start the analyzer actor (named after the task) in the group, wait for it to load, then keep
        it until the task is deleted (SUCCEEDED: an analyzer's normal end) or it dies (FAILED)."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from .analyzer import AnalyzerActor

        rec = self.record
        actor: Any = ray.remote(AnalyzerActor)
        analyzer = actor.options(
            name=rec.task_id,
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=self.cpus,
            num_gpus=self._gpu_share(),
            max_restarts=0,
            max_concurrency=32,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
        ).remote(rec.to_json(), self._env(0, None), threads=max(1, int(self.cpus)))
        try:
            self._set_state("loading")
            ref = analyzer.ready.remote()
            while not ray.wait([ref], timeout=1.0)[0]:
                if self._cancel.is_set():
                    return TaskStatus.CANCELLED, "deleted while loading"
                if self._preempt.is_set():
                    return TaskStatus.PREEMPTED, "preempted while loading"
            loaded = ray.get(ref)
            if loaded["error"]:
                return TaskStatus.FAILED, f"loading failed: {loaded['error']}"
            self._set_state("ready")
            ref = analyzer.wait_closed.remote()
            while not ray.wait([ref], timeout=1.0)[0]:
                if self._cancel.is_set():
                    return TaskStatus.SUCCEEDED, ""
                if self._preempt.is_set():
                    return TaskStatus.PREEMPTED, "preempted while idle"
            ray.get(ref)
            return TaskStatus.FAILED, "the analyzer closed by itself"
        except ray.exceptions.RayActorError as e:
            return TaskStatus.FAILED, f"the analyzer process died ({type(e).__name__})"
        finally:
            self._set_state("stopping")
            try:
                ray.get(analyzer.close.remote(), timeout=10)
            except Exception as e:  # it died, or hangs: it is killed next either way
                log.info("%s: the analyzer did not close cleanly: %s: %s", rec.task_id, type(e).__name__, e)
            try:
                ray.kill(analyzer, no_restart=True)
            except Exception as e:
                log.warning("%s: could not kill the analyzer: %s: %s", rec.task_id, type(e).__name__, e)

    def _gpu_share(self) -> float:
        """The fraction of a GPU each bundle asks Ray for (:data:`RAY_GPU_SHARE`; 0 for a CPU task)."""
        return RAY_GPU_SHARE if self.record.gpus else 0.0

    def _placement_group(self) -> Any:
        import ray
        from ray.util.placement_group import placement_group

        rec = self.record
        frac = self._gpu_share()
        ranks = rec.world_size
        gpu = {"GPU": frac} if frac else {}
        bundles: list[dict[str, float]] = [{"CPU": self.cpus, **gpu} for _ in range(ranks)]
        # one process over several GPUs: the extra GPUs get bundles of their own that only hold the share
        bundles += [{"GPU": frac} for _ in range(len(rec.gpus) - ranks)] if frac else []
        selector = [{"ray.io/node-id": full_node_id(rec.node)}] * len(bundles) if rec.node else None
        name = f"{rec.task_id} {rec.name}".strip()
        pg = placement_group(bundles, strategy="STRICT_PACK", name=name, bundle_label_selector=selector)
        self._set_state("waiting for resources")
        tries = 0
        while True:  # Ray frees a removed group's resources a little after removal: wait, cancellable
            if self._cancel.is_set() or self._preempt.is_set():
                self._remove(pg)
                return None
            with contextlib.suppress(ray.exceptions.GetTimeoutError):  # not placed yet: ask again
                ray.get(pg.ready(), timeout=1.0)
                return pg
            tries += 1
            if rec.node and tries % 5 == 0 and self._node_gone(wait_s=0.0):  # it would wait forever
                self._remove(pg)
                raise _NodeLost(f"its node {rec.node} was lost before the run started")

    def _env(self, rank: int, master: tuple[str, int] | None) -> dict[str, str]:
        """The submitter's environment, then dlnest-ray's own variables over it."""
        rec = self.record
        env = {
            **self.user_env,
            ENV_NAMES_VAR: ",".join(sorted(self.user_env)),
            "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
            "DLNEST_RAY_TASK": rec.task_id,
        }
        if not rec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif rec.placement is Placement.DDP:
            env["CUDA_VISIBLE_DEVICES"] = str(rec.gpus[rank])
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, rec.gpus))
        if master is not None:
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(rec.world_size),
                MASTER_ADDR=master[0],
                MASTER_PORT=str(master[1]),
            )
        return env

    def _run_ranks(self, pg: Any) -> tuple[TaskStatus, str, int, str]:
        """Start the ranks in ``pg`` and wait for them: (status, error, failing rank, reason — why an
        attempt that may be retried ended, else "", see :meth:`_wait`)."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        rec = self.record
        master = None
        if rec.world_size > 1:
            monitor = monitor_for(full_node_id(rec.node or ""))
            master = (ray.get(monitor.address.remote()), ray.get(monitor.free_port.remote()))
        frac = self._gpu_share()
        margin = self._margin()
        kwargs: dict[str, Any] = {
            "task_id": rec.task_id,
            "resume": rec.resume,
            "ckpt_id": rec.ckpt_id,
            "threads": max(1, int(self.cpus)),
            "cpu": rec.placement is Placement.CPU,
            "description": rec.description,
            "memory_cap_mb": rec.mb_per_gpu if rec.gpus else None,
            "report_epochs": bool(rec.sweep),
            "memory_margin": margin,
            "attempt": rec.attempt,
            "retry_reason": rec.attempt_reasons[-1] if rec.attempt > 1 and rec.attempt_reasons else "",
        }
        warm = self._take_warm(pg) if rec.world_size == 1 else None
        if warm is not None:
            self._warm = warm
            name = f"{rec.task_id} {rec.name} rank0".strip()
            refs = [warm.run.options(name=name).remote(rec.package, self._env(0, master), rank=0, **kwargs)]
        else:
            # max_calls=1: the rank's worker exits after the run, so no CUDA context or user module
            # outlives it, and exits by itself, so Ray hears how its task ended (killed, it would show
            # it as failed)
            remote: Any = ray.remote(max_calls=1)(cast(Any, rank_task))
            refs = [
                remote.options(
                    name=f"{rec.task_id} {rec.name} rank{r}".strip(),
                    num_cpus=self.cpus,
                    num_gpus=frac,
                    max_retries=0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
                ).remote(rec.package, self._env(r, master), rank=r, **kwargs)
                for r in range(rec.world_size)
            ]
        self._set_state("running")
        grace = EXIT_GRACE_S
        try:
            status, error, failing, reason = self._wait(refs, pg)
            if self._cancel.is_set() or reason not in ("", OUT_OF_MEMORY):
                grace = 0.0  # force-cancelled or lost ranks are gone or going: kill what is left at once
            return status, error, failing, reason
        finally:
            self._end_warm(force=grace == 0.0)  # a warm process runs one rank: it exits now, as a worker
            self._kill_groups(grace)  # the ranks' workers and whatever they started: no rank outlives it

    def _take_warm(self, pg: Any) -> Any:
        """The warm rank process of the node the group is placed on, when one is ready and suits the run
        (:mod:`.warm`); else None: the rank starts cold, and the log says why."""
        import ray
        from ray.util.placement_group import placement_group_table

        try:
            node = str(placement_group_table(pg)["bundles_to_node_id"][0])
            ref = monitor_for(node).take_warm.remote(self.user_env)
            warm, why = ray.get(ref, timeout=TAKE_TIMEOUT_S)
        except Exception as e:  # the monitor is busy or gone: a cold start costs seconds, never the run
            warm, why = None, f"the node's monitor did not answer ({type(e).__name__}: {e})"
        if warm is None:
            self._note(f"starts cold: {why}")
            return None
        self._note(f"starts in the warm rank process of {node[:8]} (torch already imported)")
        return warm

    def _note(self, line: str) -> None:
        """A line about this task for the center's log (and this actor's); never waits for the center."""
        log.info("%s %s", self.record.task_id, line)
        try:
            get_center().task_note.remote(task_id=self.record.task_id, line=line)
        except Exception as e:  # the center restarts: the line stays in this actor's log
            log.info("%s: could not tell the center: %s: %s", self.record.task_id, type(e).__name__, e)

    def _end_warm(self, force: bool) -> None:
        """End the warm process the rank ran in: it exits by itself after its rank (``force``: killed)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return
        import ray

        try:
            if force:
                ray.kill(warm, no_restart=True)
            else:
                warm.__ray_terminate__.remote()
        except Exception as e:  # it is gone already; its process group is killed next anyway
            log.info("%s: ending the warm rank process: %s: %s", self.record.task_id, type(e).__name__, e)

    def _margin(self) -> float:
        """The center's memory margin (for a rank's out-of-memory advice); the default when unreachable."""
        import ray

        try:
            return float(ray.get(get_center().get_settings.remote(), timeout=REPORT_TIMEOUT_S).margin)
        except Exception as e:
            log.info("%s: reading the memory margin: %s: %s", self.record.task_id, type(e).__name__, e)
            return DEFAULT_MARGIN

    def _wait(self, refs: list[Any], pg: Any = None) -> tuple[TaskStatus, str, int, str]:
        """Wait for the rank tasks; the first failure stops the others. Returns (status, error, failing
        rank, reason): for a FAILED attempt that may be retried, why (:func:`failure_reason`; a lost
        worker is refined to ``node lost`` by the caller), else ""."""
        import ray

        rank_of = {ref: r for r, ref in enumerate(refs)}
        pending = list(refs)
        error, failing, stopped, reason, preempted = "", 0, False, "", ""
        while pending:
            if self._cancel.is_set() or error:
                self._stop(pending)
                stopped = stopped or self._cancel.is_set()
                break
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = task_error_cause(e)
                    if isinstance(cause, RunPreempted):  # it stopped at an epoch's end, as asked
                        preempted = str(cause)
                        continue
                    if isinstance(cause, RunStopped):  # it stopped as asked (del, down --force)
                        stopped = True
                        continue
                    line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                    reason = reason or failure_reason(line, died=False)
                    error = error or line
                    failing = rank_of[ref] if error == line else failing
                except ray.exceptions.RayError as e:
                    lost = failure_reason(str(e), died=True)
                    if lost == WORKER_DIED and not _group_placed(pg):
                        lost = PG_LOST
                    reason = reason or lost
                    if not error:
                        error, failing = f"rank {rank_of[ref]} died: {type(e).__name__}", rank_of[ref]
        if stopped or self._cancel.is_set():
            return TaskStatus.CANCELLED, "deleted while running", failing, ""
        if error:
            return TaskStatus.FAILED, error, failing, reason
        if preempted:
            return TaskStatus.PREEMPTED, preempted, 0, ""
        return TaskStatus.SUCCEEDED, "", 0, ""

    def _node_gone(self, wait_s: float) -> bool:
        """Whether the run's node has left the cluster; Ray notices a lost node a little after its
        processes died, so ask for up to ``wait_s`` seconds."""
        node = self.record.node
        if not node:
            return False
        import ray

        deadline = time.monotonic() + wait_s
        asked = False
        while True:
            try:
                full = alive_nodes().get(node)
            except Exception as e:  # the GCS does not answer: say nothing rather than guess
                log.info("%s: reading the cluster's nodes: %s: %s", self.record.task_id, type(e).__name__, e)
                return False
            if full is None:
                return True
            if time.monotonic() >= deadline:
                return False
            if not asked:  # the node's monitor answers at once while the node lives
                asked = True
                try:
                    ray.get(monitor_for(full).address.remote(), timeout=min(2.0, wait_s))
                    return False
                except Exception as e:
                    log.info("%s: node %s does not answer: %s", self.record.task_id, node, type(e).__name__)
            time.sleep(0.5)

    def _stop(self, pending: list[Any]) -> None:
        """Stop file, grace period, then force: no rank outlives its task."""
        import ray

        rec = self.record
        self._set_state("stopping")
        marker = stop_file(rec.package, rec.task_id)
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        deadline = time.monotonic() + self.grace_s
        while pending and time.monotonic() < deadline:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(1.0, self.grace_s))
        if pending and self._warm is not None:  # an actor task cannot be force-cancelled: end its process
            self._end_warm(force=True)
            return
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception as e:  # it ended meanwhile; its process group is killed next anyway
                log.info("%s: force-cancel of a rank: %s: %s", rec.task_id, type(e).__name__, e)

    def _kill_groups(self, grace_s: float = 0.0) -> None:
        """SIGKILL each rank's process group (every rank leads one) on its node, then forget them; each
        rank's worker first gets ``grace_s`` to exit by itself (see ``DeviceMonitor.kill_groups``)."""
        import ray

        rec = self.record
        files = [pid_file(rec.package, rec.task_id, r) for r in range(rec.world_size)]
        alive = alive_nodes()
        # a group whose node the file does not name (a file from an older version) is looked for on the
        # run's node, or on every node for a CPU run (a pgid that is not there is skipped)
        unknown = [rec.node] if rec.node else list(alive)
        per_node: dict[str, list[int]] = {}
        for f in files:
            try:
                pgid, node = parse_pid_record(f.read_text())
            except FileNotFoundError:  # that rank never started
                continue
            except (OSError, ValueError) as e:
                log.warning("%s: unreadable pid file %s: %s", rec.task_id, f, e)
                continue
            for name in [node] if node else unknown:
                per_node.setdefault(name, []).append(pgid)
        for name, pgids in per_node.items():
            full = alive.get(name)
            if full is None:  # a node that went away took the processes with it
                continue
            try:
                ray.get(monitor_for(full).kill_groups.remote(pgids, grace_s), timeout=30 + grace_s)
            except Exception as e:
                log.warning(
                    "%s: killing rank processes on %s: %s: %s", rec.task_id, name, type(e).__name__, e
                )
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    def _remove(self, pg: Any) -> None:
        import ray
        from ray.util.placement_group import placement_group_table, remove_placement_group

        try:
            remove_placement_group(pg)
        except Exception as e:  # already removed (a node loss takes it): its resources are free
            log.info("%s: removing the placement group: %s: %s", self.record.task_id, type(e).__name__, e)
        deadline = time.monotonic() + 10
        told = False
        while time.monotonic() < deadline:  # report only once Ray shows the resources free
            try:
                if placement_group_table(pg).get("state") == "REMOVED":
                    break
            except Exception as e:  # said once: this is polled every 50 ms
                if not told:
                    log.info("%s: reading the placement group: %s", self.record.task_id, e)
                    told = True
            time.sleep(0.05)
        del ray

    def _report(self, status: TaskStatus, error: str, tail: list[str], reason: str = "") -> None:
        """Tell the center (``reason``: why a FAILED attempt ended when it may be retried); retry while it
        restarts (it re-attaches to this supervisor by name)."""
        import ray

        deadline = time.monotonic() + REPORT_PATIENCE_S
        tries = 0
        while time.monotonic() < deadline:
            try:
                center = get_center()
                ref: Any = center.task_finished.remote(
                    task_id=self.record.task_id,
                    status=status.value,
                    error=error,
                    output_tail=tail,
                    reason=reason,
                )
                ray.get(ref, timeout=30)
                return
            except Exception as e:  # the center restarts: it re-attaches to this supervisor by name
                tries += 1  # warned once, then quietly: this retries every second while the center is down
                log.log(
                    logging.WARNING if tries == 1 else logging.DEBUG,
                    "%s: reporting its end to the center (try %d): %s: %s; retrying every second",
                    self.record.task_id,
                    tries,
                    type(e).__name__,
                    e,
                )
                time.sleep(1.0)
        log.error(
            "%s: the center did not take its end (%s) within %g s",
            self.record.task_id,
            status,
            REPORT_PATIENCE_S,
        )
