"""Recovery: from a node's loss to the retried run's first training step, and the epochs of work lost.

A two-node local cluster (``ray.cluster_utils.Cluster``: a head and a worker node, each with 2 CPUs,
2 logical GPUs and the fake device probe ``DLNEST_RAY_FAKE_GPUS=2x16000``; no GPU, no internet) and a
center on the head. After one warm-up run, each repeat:

1. fresh queue latency (the anchor): a one-epoch run of the project, pinned to the head's gpu0 (where
   the retry will land), from ``Client.run_train`` to its first ``run_one_step``; measured on the head
   alone, before the repeat's worker node joins;
2. recovery: a worker node joins; a run of ``--epochs`` epochs (checkpoint after every epoch,
   ``--step-sleep`` s per step) is pinned to it. Once it has begun ``--kill-after`` epochs of steps
   (2.5: its second checkpoint is written and it is half way through its third epoch) the node is lost
   (``--loss``): ``kill`` (default) SIGKILLs every process of the node at once — raylet, agents, workers:
   a crashed machine whose peers get "connection refused"; ``term`` is ``cluster.remove_node``'s
   graceful stop (the raylet gets SIGTERM, tells the GCS and stops its workers); ``freeze`` SIGSTOPs every
   process of the node — a machine that stops answering (power loss, network partition): Ray must time
   out its health checks; the frozen processes are killed once Ray has declared the node dead. The
   run's supervisor (on the head) reports the lost attempt (``node lost``, or ``worker died`` when Ray
   had not declared the node dead within the supervisor's 10 s), and the center retries it from its
   latest valid checkpoint on the head. Measured: from the loss to the retried attempt's first step.
   The run must end SUCCEEDED on the head.

The user model appends ``{"pid", "t", "epoch", "iter", "step"}`` (``step`` = epoch × steps per epoch +
iter: the global step before this one) to a stamp file at every step, and ``{"pid", "t", "init"}`` in
``Model.init``. The killed attempt is the process that stamped before the loss; the retry is the first
other process to stamp after it.

Work lost, in epochs = (steps the killed attempt had begun − the global step the retry resumed at) /
steps per epoch: the steps trained twice (the step in flight counts as lost). With a checkpoint after
every epoch it is below one epoch plus the step in flight; killed half way through an epoch, 0.5.

Where the time goes (per repeat, seconds after the loss; the center's record and Ray's node table are
polled every 0.2 s): "node dead in Ray" (the GCS health checks: a node is declared dead after
``health_check_failure_threshold`` failed checks, one every ``health_check_period_ms``, each waiting up
to ``health_check_timeout_ms``: Ray's defaults 5, 3000 ms, 10000 ms; ``--health-check-*`` set them on the
head, as ``ray start --head --system-config '{...}'`` does in a real deployment), "retry decided" (the
supervisor reported, the center requeued the run), "relaunched" (the center launched the retry: it waits
for the last attempt's supervisor to exit), "rank running" (the placement group placed, the rank task
started), "Model.init" (a new worker, imports, dataset and model built), first step (optimizer, the
checkpoint loaded).

Goals: recovery / fresh queue latency <= 2.0 and at most 1.0 epoch lost (medians over the repeats).

Usage: python bench/recovery.py [--repeats 3] [--quick] [--loss kill|term|freeze] [--json]
       [--health-check-period-ms MS] [--health-check-timeout-ms MS] [--health-check-failure-threshold N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECOVERY_GOAL = 2.0  # recovery time / fresh queue latency
LOST_GOAL = 1.0  # epochs of work lost
FAKE_GPUS = "2x16000"  # 2 fake GPUs of 16000 MB per node (logical Ray GPUs: num_gpus=2)
MEMORY_MB = 4000
BATCH = 8
POLL_S = 0.05  # stamp files (cheap: the times come from the stamps themselves)
WATCH_S = 0.2  # the center's record and Ray's node table after a loss (calls: not to load 2 cores)
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
NODE_DEAD_WAIT_S = 90.0  # after the run ended: how long (from the removal) to wait for Ray's "node dead"
LOSSES = {"kill": "SIGKILL", "term": "SIGTERM", "freeze": "SIGSTOP"}

MODEL = """
import json, os, time
import torch
from torch import nn
from dlnest_ray import ModelBaseTorch


class Model(ModelBaseTorch):
    def init(self, args, dataset_info):
        with open(args["bench"]["stamp_file"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "t": time.time(), "init": True}) + "\\n")
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
        self.loss_fn = nn.CrossEntropyLoss()

    def init_log(self):
        return {"loss": []}

    def init_optimizer(self):
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def run_one_step(self, data, log, iter, epoch):
        bench = self.args["bench"]
        stamp = {"pid": os.getpid(), "t": time.time(), "epoch": epoch, "iter": iter,
                 "step": epoch * bench["steps_per_epoch"] + iter, "global_step": self.status.global_step}
        with open(bench["stamp_file"], "a") as f:
            f.write(json.dumps(stamp) + "\\n")
        time.sleep(bench["step_sleep_s"])
        x, y = data
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        log["loss"].append(loss.item())
"""

DATASET = """
import torch
from torch.utils.data import DataLoader, TensorDataset
from dlnest_ray import DatasetBase


class Dataset(DatasetBase):
    def init(self, args):
        n, batch = args["bench"]["steps_per_epoch"] * args["bench"]["batch"], args["bench"]["batch"]
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g))
        return {}, DataLoader(ds, batch_size=batch, shuffle=True), DataLoader(ds, batch_size=64)
"""

LIFE_CYCLE = """
from dlnest_ray import LifeCycleBase


class LifeCycle(LifeCycleBase):
    def need_save_model(self, epoch, log, args):
        return True

    def need_continue_train(self, epoch, log, args):
        return epoch + 1 < args["epochs"]
"""


# ------------------------------------------------------------------------------------------- options
def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="recovery.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny version: 3 epochs of 6 steps, the node removed at 1.5 epochs",
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the interrupted run (default 6)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch (default 10)")
    ap.add_argument("--step-sleep", type=float, default=0.15, help="seconds each step sleeps (0.15)")
    ap.add_argument(
        "--kill-after",
        type=float,
        default=None,
        help="epochs trained when the node is removed (default 2.5: its 2nd checkpoint + half an epoch)",
    )
    ap.add_argument(
        "--health-check-period-ms",
        type=int,
        default=None,
        help="Ray's GCS health-check period for nodes (default: Ray's own, 3000)",
    )
    ap.add_argument(
        "--health-check-timeout-ms",
        type=int,
        default=None,
        help="how long one health check waits for its answer (default: Ray's own, 10000)",
    )
    ap.add_argument(
        "--health-check-failure-threshold",
        type=int,
        default=None,
        help="failed health checks before Ray declares a node dead (default: Ray's own, 5)",
    )
    ap.add_argument(
        "--loss",
        choices=LOSSES,
        default="kill",
        help="how the node is lost: kill (SIGKILL every process of the node: it crashed, its connections "
        "are refused at once; the default), term (SIGTERM first: it shuts down, as `ray stop`), freeze "
        "(SIGSTOP every process of the node: a machine that stops answering, as a power loss or a "
        "network partition; killed once Ray has declared it dead)",
    )
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    opts = ap.parse_args(argv)
    quick = opts.quick
    if opts.epochs is None:
        opts.epochs = 3 if quick else 6
    if opts.steps_per_epoch is None:
        opts.steps_per_epoch = 6 if quick else 10
    if opts.kill_after is None:
        opts.kill_after = 1.5 if quick else 2.5
    if opts.repeats < 1:
        ap.error("--repeats must be at least 1")
    if opts.steps_per_epoch < 2 or opts.step_sleep < 0:
        ap.error("--steps-per-epoch must be at least 2 and --step-sleep not negative")
    if not 1.0 <= opts.kill_after < opts.epochs - 0.5:
        ap.error(f"--kill-after must be in [1, epochs - 0.5) (got {opts.kill_after}, epochs {opts.epochs})")
    return opts


def health_env() -> dict[str, str]:
    """``RAY_health_check_*`` variables of this environment: Ray reads them too (the head's GCS)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_health_check_")}


def system_config(opts: argparse.Namespace) -> dict[str, int]:
    """The Ray system config the head starts with: only what the options set (else Ray's defaults)."""
    out: dict[str, int] = {}
    if opts.health_check_period_ms is not None:
        out["health_check_period_ms"] = opts.health_check_period_ms
    if opts.health_check_timeout_ms is not None:
        out["health_check_timeout_ms"] = opts.health_check_timeout_ms
    if opts.health_check_failure_threshold is not None:
        out["health_check_failure_threshold"] = opts.health_check_failure_threshold
    return out


# ------------------------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class Loss:
    """What a removal cost the run, read from its stamps (times: seconds after the removal began)."""

    recovery_s: float  # removal → the retry's first training step
    killed_last_s: float  # removal → the killed attempt's last stamp (< 0: it died at once)
    steps_begun: int  # steps the killed attempt had begun (global step of its last stamp + 1)
    killed_epoch: int  # the epoch it was in
    resume_step: int  # the global step the retry resumed at (the checkpoint's)
    resume_epoch: int  # the epoch the retry started with
    lost_steps: int  # steps trained twice: steps_begun - resume_step
    lost_epochs: float  # lost_steps / steps per epoch
    redo_s: float  # training time the killed attempt spent on the lost steps (0 when not known)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The stamp file's records, in order (a half-written last line is skipped)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def read_stamps(path: Path) -> list[dict[str, Any]]:
    """The step stamps: ``{"pid", "t", "epoch", "iter", "step", "global_step"}``."""
    return [r for r in read_records(path) if "step" in r]


def model_init_at(path: Path, pid: int) -> float | None:
    """When process ``pid`` built its model (``Model.init``: imports, dataset and model built)."""
    return next((float(r["t"]) for r in read_records(path) if r.get("init") and r["pid"] == pid), None)


def retry_stamp(stamps: list[dict[str, Any]], t_removed: float) -> dict[str, Any] | None:
    """The retried attempt's first stamp: the first one after the removal by a process that did not
    stamp before it (None while there is none)."""
    before = {s["pid"] for s in stamps if s["t"] < t_removed}
    return next((s for s in stamps if s["t"] >= t_removed and s["pid"] not in before), None)


def analyse(stamps: list[dict[str, Any]], t_removed: float, steps_per_epoch: int) -> Loss:
    """Recovery time and work lost from the stamps of a run whose node was removed at ``t_removed``."""
    killed = [s for s in stamps if s["t"] < t_removed]
    if not killed:
        raise ValueError("no step was stamped before the removal")
    pids = {s["pid"] for s in killed}
    if len(pids) != 1:
        raise ValueError(f"{len(pids)} processes stamped before the removal; expected the one attempt")
    retry = retry_stamp(stamps, t_removed)
    if retry is None:
        raise ValueError("no retried attempt stamped after the removal")
    pid = pids.pop()
    last = max((s for s in stamps if s["pid"] == pid), key=lambda s: s["step"])
    begun = int(last["step"]) + 1
    resume = int(retry["step"])
    first_redone = next((s for s in stamps if s["pid"] == pid and s["step"] == resume), None)
    redo = float(last["t"]) - float(first_redone["t"]) if first_redone is not None else 0.0
    return Loss(
        recovery_s=float(retry["t"]) - t_removed,
        killed_last_s=float(last["t"]) - t_removed,
        steps_begun=begun,
        killed_epoch=int(last["epoch"]),
        resume_step=resume,
        resume_epoch=int(retry["epoch"]),
        lost_steps=begun - resume,
        lost_epochs=(begun - resume) / steps_per_epoch,
        redo_s=max(redo, 0.0),
    )


@dataclass(frozen=True)
class Repeat:
    """One repeat: the anchor, the recovery and its phases (seconds after the removal began)."""

    fresh_s: float  # fresh run: submit → first step
    fresh_init_s: float | None  # fresh run: submit → Model.init
    loss: Loss
    attempts: int  # the attempt the run succeeded on (2: retried once)
    reasons: list[str]  # why each earlier attempt ended (``node lost``, ``worker died``)
    node_dead_s: float | None  # Ray's GCS marked the node dead (None: not within the run)
    retry_decided_s: float | None  # the center requeued the run (the supervisor reported the loss)
    relaunched_s: float | None  # the center launched the attempt that stamped first after the removal
    running_s: float | None  # that attempt's rank started (its placement group was placed)
    model_init_s: float | None  # its Model.init ran (worker start, imports, dataset built)
    remove_call_s: float  # how long cluster.remove_node itself took


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def summarize(repeats: Sequence[Repeat], opts: argparse.Namespace) -> dict[str, Any]:
    """Medians, the two ratios against their goals and PASS/MISS, plus every repeat (JSON-ready)."""
    fresh = median([r.fresh_s for r in repeats])
    recovery = median([r.loss.recovery_s for r in repeats])
    ratios = [r.loss.recovery_s / r.fresh_s for r in repeats]
    ratio = median(ratios)
    lost = median([r.loss.lost_epochs for r in repeats])
    phases = {
        key: median(vals)
        for key in (
            "fresh_init_s",
            "node_dead_s",
            "retry_decided_s",
            "relaunched_s",
            "running_s",
            "model_init_s",
        )
        if (vals := [v for r in repeats if (v := getattr(r, key)) is not None])
    }
    return {
        "repeats": [asdict(r) for r in repeats],
        "settings": {
            "epochs": opts.epochs,
            "steps_per_epoch": opts.steps_per_epoch,
            "step_sleep_s": opts.step_sleep,
            "kill_after_epochs": opts.kill_after,
            "loss": opts.loss,
            "ray_system_config": system_config(opts),
            "ray_env": health_env(),
        },
        "median": {
            "fresh_s": fresh,
            "recovery_s": recovery,
            "ratio": ratio,
            "lost_epochs": lost,
            "lost_steps": median([r.loss.lost_steps for r in repeats]),
            **phases,
        },
        "goals": {
            "ratio": {"goal": RECOVERY_GOAL, "value": ratio, "pass": ratio <= RECOVERY_GOAL},
            "lost_epochs": {"goal": LOST_GOAL, "value": lost, "pass": lost <= LOST_GOAL},
        },
    }


def _s(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.2f}"


def repeat_line(i: int, r: Repeat) -> str:
    ls = r.loss
    return (
        f"run {i}: fresh {r.fresh_s:5.2f} s (Model.init at {_s(r.fresh_init_s)} s)   recovery "
        f"{ls.recovery_s:6.2f} s   ratio {ls.recovery_s / r.fresh_s:5.2f}   lost {ls.lost_steps} steps = "
        f"{ls.lost_epochs:.2f} epochs\n"
        f"       after the loss: node dead in Ray {_s(r.node_dead_s)} s, retry decided "
        f"{_s(r.retry_decided_s)} s, relaunched {_s(r.relaunched_s)} s, rank running {_s(r.running_s)} s, "
        f"Model.init {_s(r.model_init_s)} s, first step {_s(ls.recovery_s)} s; the killed rank's last step "
        f"{_s(ls.killed_last_s)} s\n"
        f"       killed in epoch {ls.killed_epoch} with {ls.steps_begun} steps begun, resumed at epoch "
        f"{ls.resume_epoch} (step {ls.resume_step}); attempt {r.attempts} after {', '.join(r.reasons)}"
    )


def summary_lines(summary: dict[str, Any]) -> list[str]:
    med, goals, n = summary["median"], summary["goals"], len(summary["repeats"])
    settings = summary["settings"]
    given = {**settings.get("ray_env", {}), **settings["ray_system_config"]}
    cfg = ", ".join(f"{k.removeprefix('RAY_')}={v}" for k, v in given.items()) or "Ray's defaults"
    kill = LOSSES[settings["loss"]]
    phases = ", ".join(
        f"{label} {med[key]:.2f} s"
        for key, label in (
            ("node_dead_s", "node dead in Ray"),
            ("retry_decided_s", "retry decided"),
            ("relaunched_s", "relaunched"),
            ("running_s", "rank running"),
            ("model_init_s", "Model.init"),
        )
        if key in med
    )
    return [
        f"medians [repeats={n}, node lost by {kill}, health checks: {cfg}]: fresh queue latency "
        f"{med['fresh_s']:.2f} s (Model.init at {med.get('fresh_init_s', float('nan')):.2f} s), recovery "
        f"{med['recovery_s']:.2f} s ({phases} after the loss)",
        f"recovery: median ratio recovery / fresh queue latency = {goals['ratio']['value']:.3f} "
        f"(goal <= {RECOVERY_GOAL}) {'PASS' if goals['ratio']['pass'] else 'MISS'}",
        f"recovery: median work lost = {goals['lost_epochs']['value']:.2f} epochs "
        f"(goal <= {LOST_GOAL}) {'PASS' if goals['lost_epochs']['pass'] else 'MISS'}",
    ]


# ------------------------------------------------------------------------------------------- the run
def make_project(root: Path, opts: argparse.Namespace) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in {"Model.py": MODEL, "Dataset.py": DATASET, "LifeCycle.py": LIFE_CYCLE}.items():
        (root / rel).write_text(text)
    cfg = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "checkpoint_args": {
            "max_ckpt_in_fast_track": opts.epochs,  # none evicted
            "max_ckpt_in_slow_track": 0,
            "dilation_in_slow_track": 1,
            "max_ckpt_in_consistent_track": 0,
        },
        "root_file_path": ".",
        "model_file_path": "./Model.py",
        "dataset_file_path": "./Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "seed": 0,
        "epochs": opts.epochs,
        "bench": {"steps_per_epoch": opts.steps_per_epoch, "batch": BATCH, "step_sleep_s": opts.step_sleep},
    }
    (root / "root_config.json").write_text(json.dumps(cfg))
    return root / "root_config.json"


def write_freq(path: Path, opts: argparse.Namespace, stamp: Path, epochs: int) -> Path:
    bench = {
        "steps_per_epoch": opts.steps_per_epoch,
        "batch": BATCH,
        "step_sleep_s": opts.step_sleep,
        "stamp_file": str(stamp),
    }
    path.write_text(json.dumps({"epochs": epochs, "bench": bench}))
    return path


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = POLL_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def row(client: Any, task_id: str) -> dict[str, Any]:
    return dict(client.task(task_id).to_row())


def wait_end(client: Any, task_id: str, timeout: float = 300.0) -> dict[str, Any]:
    try:
        wait_for(lambda: row(client, task_id)["status"] in TERMINAL, timeout, f"{task_id} to end", 0.2)
    except TimeoutError as e:
        r = row(client, task_id)
        log = client.get_dlnest_output(0)["lines"][-10:]
        where = {k: r[k] for k in ("status", "phase", "wait_reason", "attempt", "error")}
        raise TimeoutError(f"{e}: {where}; center log: {log}") from None
    return row(client, task_id)


def node_names(client: Any) -> set[str]:
    return {d.node for d in client.get_devices_info()}


def descendants(roots: Sequence[int]) -> list[int]:
    """``roots`` and every process below them (read from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo += children.get(pid, [])
    return out


def node_pids(node: Any) -> list[int]:
    """Every process of a ``ray.cluster_utils`` node: its raylet and agents and their workers."""
    roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
    return descendants(roots)


def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Bench:
    """The two-node cluster, its center and the project; :meth:`close` tears everything down."""

    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts, self.work = opts, work
        self.cluster: Any = None
        self.client: Any = None
        self.head = ""
        self.n = 0
        self.frozen: list[int] = []  # processes of a frozen node, killed once Ray has declared it dead
        self.config = Path()
        self.next_check = 0.0

    def start(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        from dlnest_ray.actors.center_actor import get_or_create_center
        from dlnest_ray.actors.client import Client
        from dlnest_ray.actors.names import NAMESPACE

        os.environ["DLNEST_RAY_FAKE_GPUS"] = FAKE_GPUS  # inherited by every node's processes
        head_args: dict[str, Any] = {"num_cpus": 2, "num_gpus": 2, "include_dashboard": False}
        if system_config(self.opts):
            head_args["_system_config"] = system_config(self.opts)
        self.cluster = Cluster(initialize_head=True, head_node_args=head_args)
        ray.init(
            address=self.cluster.address,
            namespace=NAMESPACE,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        self.client = Client(get_or_create_center(str(self.work / "home")))
        self.head = ray.get_runtime_context().get_node_id()[:8]
        self.config = make_project(self.work / "project", self.opts)

    def add_worker(self) -> tuple[Any, str]:
        """A new worker node, once the center sees its GPUs; returns (node, its short name)."""
        node = self.cluster.add_node(num_cpus=2, num_gpus=2)
        name = str(node.node_id)[:8]
        wait_for(lambda: name in node_names(self.client), 60, f"the center to see node {name}", 0.2)
        return node, name

    def submit(self, label: str, node: str, epochs: int) -> tuple[str, Path, float]:
        """A run pinned to ``node``'s gpu0: (task id, its stamp file, the submit time)."""
        self.n += 1
        stamp = self.work / f"{label}_{self.n}.stamps"
        freq = write_freq(self.work / f"{label}_{self.n}_freq.json", self.opts, stamp, epochs)
        self.client.change_devices([f"{node}:gpu0"])
        t0 = time.time()
        tid = self.client.run_train(str(self.config), freq_path=str(freq), memory_mb=MEMORY_MB)
        got = row(self.client, tid)
        if (got["status"], got["node"]) != ("RUNNING", node):
            raise RuntimeError(f"{tid} did not launch on {node}: {got['status']} {got['node']}")
        return tid, stamp, t0

    def stamped(self, tid: str, stamp: Path) -> list[dict[str, Any]]:
        """The run's step stamps so far; an error when it ended without any (the center is asked once a
        second at most: a busy center would slow the very start being timed)."""
        stamps = read_stamps(stamp)
        if not stamps and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + 1.0
            if (r := row(self.client, tid))["status"] in TERMINAL:
                raise RuntimeError(f"{tid} ended {r['status']} before its first step: {r['error']}")
        return stamps

    def fresh(self) -> tuple[float, float | None]:
        """Submit → first step (and → Model.init) of a one-epoch run on the head (where retries land)."""
        tid, stamp, t0 = self.submit("fresh", self.head, 1)
        first = wait_for(lambda: self.stamped(tid, stamp), 300, f"{tid}'s first step")[0]
        done = wait_end(self.client, tid)
        if done["status"] != "SUCCEEDED":
            raise RuntimeError(f"the fresh run {tid} ended {done['status']}: {done['error']}")
        init = model_init_at(stamp, first["pid"])
        return float(first["t"]) - t0, None if init is None else init - t0

    def recovery(self, worker: Any, name: str, fresh: tuple[float, float | None]) -> Repeat:
        """A run on ``worker`` whose node is removed after ``--kill-after`` epochs; it must be retried on
        the head and succeed. Polls the center and Ray's view of the node until the run has ended."""
        import ray

        opts, client = self.opts, self.client
        tid, stamp, _ = self.submit("victim", name, opts.epochs)
        client.change_devices([f"{n}:gpu{g}" for n in (self.head, name) for g in (0, 1)])
        kill_step = round(opts.kill_after * opts.steps_per_epoch)

        def ready() -> bool:  # the kill_step-th step has begun (checkpoints are written as they come)
            stamps = self.stamped(tid, stamp)
            return bool(stamps) and stamps[-1]["step"] >= kill_step - 1

        wait_for(ready, 300, f"{tid} to train {opts.kill_after} epochs")
        full_id = str(worker.node_id)
        t_removed = time.time()
        if opts.loss == "freeze":
            self.frozen = node_pids(worker)
            signal_all(self.frozen, signal.SIGSTOP)
        elif opts.loss == "kill":  # every process at once, workers included, as when the machine dies
            signal_all(node_pids(worker), signal.SIGKILL)
            self.cluster.remove_node(worker, allow_graceful=False)
        else:  # the raylet gets SIGTERM and stops its workers itself (`cluster.remove_node`'s default)
            self.cluster.remove_node(worker, allow_graceful=True)
        remove_call = time.time() - t_removed
        seen: dict[str, float] = {}
        first: dict[str, Any] | None = None
        deadline = time.monotonic() + 300
        while True:  # until the run ends: when Ray saw the node dead, the center retried, it stamped
            now = time.time() - t_removed
            if "node_dead_s" not in seen and not any(
                n["NodeID"] == full_id and n["Alive"] for n in cast(Any, ray).nodes()
            ):
                seen["node_dead_s"] = now
                self.bury(worker)  # a frozen node is gone for Ray: its processes may go too
            r = row(client, tid)
            if "retry_decided_s" not in seen and r["attempt"] >= 2:
                seen["retry_decided_s"] = now
            if first is None and (first := retry_stamp(read_stamps(stamp), t_removed)) is not None:
                seen["relaunched_s"] = r["started_at"] - t_removed if r["started_at"] else float("nan")
                seen["running_s"] = r["running_at"] - t_removed if r["running_at"] else float("nan")
            if r["status"] in TERMINAL and ("node_dead_s" in seen or now > NODE_DEAD_WAIT_S):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tid} did not end within 300 s of its node's removal: {r}")
            time.sleep(WATCH_S)
        if r["status"] != "SUCCEEDED" or r["node"] != self.head or first is None:
            raise RuntimeError(
                f"{tid}: expected a retry that SUCCEEDED on the head ({self.head}): {r['status']} on "
                f"{r['node']}, attempt {r['attempt']} ({r['attempt_reasons']}): {r['error']}"
            )
        init = model_init_at(stamp, first["pid"])
        return Repeat(
            fresh_s=fresh[0],
            fresh_init_s=fresh[1],
            loss=analyse(read_stamps(stamp), t_removed, opts.steps_per_epoch),
            model_init_s=None if init is None else init - t_removed,
            attempts=int(r["attempt"]),
            reasons=list(r["attempt_reasons"]),
            node_dead_s=seen.get("node_dead_s"),
            retry_decided_s=seen.get("retry_decided_s"),
            relaunched_s=seen.get("relaunched_s"),
            running_s=seen.get("running_s"),
            remove_call_s=remove_call,
        )

    def bury(self, worker: Any) -> None:
        """Kill a frozen node's processes (SIGKILL ends a stopped process) and drop it from the cluster."""
        if self.frozen:
            signal_all(self.frozen, signal.SIGKILL)
            self.frozen = []
            self.cluster.remove_node(worker, allow_graceful=False)

    def close(self) -> None:
        import ray

        signal_all(self.frozen, signal.SIGKILL)  # a frozen node would never answer cluster.shutdown
        try:
            ray.shutdown()
        finally:
            try:
                if self.cluster is not None:
                    self.cluster.shutdown()
            finally:
                os.environ.pop("DLNEST_RAY_FAKE_GPUS", None)


def run(opts: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dlnest-recovery-bench-"))
    bench = Bench(opts, work)
    out = sys.stdout
    say: Callable[[str], None] = (
        (lambda _m: None) if opts.json else (lambda m: print(m, file=out, flush=True))
    )
    # Ray's driver prints the cluster's error messages (a raylet's death, its last log lines) on stdout:
    # to stderr with them, so that stdout holds the bench's lines (and --json its one object) alone
    with contextlib.redirect_stdout(sys.stderr):
        return _run(opts, work, bench, say)


def _run(opts: argparse.Namespace, work: Path, bench: Bench, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        bench.start()
        bench.fresh()  # warm-up: imports, worker pools
        repeats = []
        for i in range(opts.repeats):
            fresh = bench.fresh()  # on the head alone, before a new node's start-up loads the CPUs
            worker, name = bench.add_worker()
            rep = bench.recovery(worker, name, fresh)
            repeats.append(rep)
            say(repeat_line(i, rep))
        return summarize(repeats, opts)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # through the `finally` that shuts the cluster down


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    summary = run(opts)
    if opts.json:
        print(json.dumps(summary, indent=2))
    else:
        for line in summary_lines(summary):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
