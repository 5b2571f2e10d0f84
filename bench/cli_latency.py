"""CLI latency: how long `tasks`, `exp`, `run` and `del` take as commands a person types, against a warm
local cluster (`dlnest-ray up`, fake GPUs) with three runs training — process start included.

Each command runs as a new process (``python -m dlnest_ray ...``), median of ``--repeats`` (20) on the
fast path (the center's local socket) and of ``--ray-repeats`` (5) through a Ray connection
(``DLNEST_RAY_NO_FAST_PATH=1``), beside ``python -c pass`` (the floor: interpreter start).

* ``tasks``: the task table, three MNIST runs training.
* ``exp``: a one-line script (``print('pong', ...)``) on a warm analyzer of an MNIST package.
* ``run``: queue a run of the MNIST project (the package copy included); it waits (``-m`` a whole GPU).
* ``del``: remove that pending run.

Measured twice on the fast path: first with only the analyzer loaded (idle), then with three runs
training; the CPU time (user + system) of each command's process is printed beside its wall time, as the
part that does not depend on how busy the machine is.

Goals (issue 16): tasks <= 0.3 s, exp <= 0.4 s, run <= 0.8 s, del <= 0.4 s (with the runs training).
Usage: python bench/cli_latency.py [--repeats 20] [--ray-repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MNIST = (REPO.parent / "shared" / "data" / "mnist").resolve()
PING = "def experience(self):\n    print('pong', self.log['acc'][-1])\n"
GOALS = {"tasks": 0.3, "exp": 0.4, "run": 0.8, "del": 0.4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        user = base / "user"
        user.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.last_cpu = 0.0
        self.env = {
            **env,
            "DLNEST_RAY_FAKE_GPUS": "2x16000",
            "DLNEST_RAY_HOME": str(self.home),
            "RAY_TMPDIR": str(base),
            "HOME": str(user),
            "DLNEST_MNIST_DIR": str(MNIST),
            "OMP_NUM_THREADS": "1",
            # three runs and an analyzer on a 2-core machine: each holds half a CPU in Ray's accounting
            "DLNEST_RAY_CPUS_PER_RANK": "0.5",
            "DLNEST_RAY_ANALYZER_CPUS": "0.5",
        }

    def cli(self, *args: object, ray: bool = False, check: bool = True) -> tuple[float, str]:
        """Run ``dlnest-ray ARGS``; (seconds, stdout). Its CPU time (user + system) is in ``last_cpu``."""
        env = {**self.env, "DLNEST_RAY_NO_FAST_PATH": "1"} if ray else self.env
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "dlnest_ray", *map(str, args)], env=env, capture_output=True, text=True
        )
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if check and proc.returncode != 0:
            raise SystemExit(f"dlnest-ray {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
        return took, proc.stdout

    def floor(self) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=self.env, check=True)
        return time.perf_counter() - start


def setup(b: Bench) -> dict[str, Any]:
    """Up, an MNIST project, a trained package with a loaded analyzer; nothing training yet."""
    from dlnest_ray.cli.project import create_project
    from dlnest_ray.runtime.trainer import TrainOptions, train
    from dlnest_ray.savepack.package import SavePackage

    b.cli("up", "--num-gpus", 2, "--home", b.home, "--port", free_port(), "--dashboard-port", 0)
    os.environ["DLNEST_MNIST_DIR"] = str(MNIST)
    project = create_project(b.base / "mnist", mnist=True)
    (project / "AnalyzeScripts" / "ping.py").write_text(PING)
    one = project / "one_epoch.json"
    one.write_text(json.dumps({"epochs": 1}))
    long = project / "long.json"
    long.write_text(json.dumps({"epochs": 1000}))
    pkg = SavePackage(str(project / "root_config.json"), str(one)).save_to_new_dir()
    assert pkg is not None
    train(pkg, TrainOptions(cpu=True))
    config = project / "root_config.json"
    _, out = b.cli("analyze", pkg, "-m", 2000, "--json")
    analyzer = json.loads(out)["task_id"]
    wait_started(b)
    b.cli("exp", analyzer, "ping")  # warm-up: the script's first import
    return {"config": config, "one": one, "long": long, "analyzer": analyzer}


def start_training(b: Bench, s: dict[str, Any]) -> None:
    """Three MNIST runs training (1000 epochs each: they outlast the measurements)."""
    for _ in range(3):
        b.cli("run", s["config"], "-f", s["long"], "-m", 5000)
    wait_started(b)


def wait_started(b: Bench) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the analyzer loaded, the three runs past their start
        rows = json.loads(b.cli("tasks", "--json")[1])
        if all(r["status"] == "RUNNING" and r.get("phase") in ("running", "ready", "busy") for r in rows):
            break
        time.sleep(1)
    else:
        raise SystemExit(f"the runs and the analyzer did not start: {rows}")


def measure(
    b: Bench, s: dict[str, Any], repeats: int, ray: bool
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(seconds, CPU seconds of the command's process) per command."""
    out: dict[str, list[float]] = {"tasks": [], "exp": [], "run": [], "del": []}
    cpu: dict[str, list[float]] = {name: [] for name in out}
    for _ in range(repeats):
        out["tasks"].append(b.cli("tasks", ray=ray)[0])
        cpu["tasks"].append(b.last_cpu)
        took, text = b.cli("exp", s["analyzer"], "ping", ray=ray)
        if "pong" not in text:
            raise SystemExit(f"exp did not run its script: {text}")
        out["exp"].append(took)
        cpu["exp"].append(b.last_cpu)
        took, text = b.cli("run", s["config"], "-f", s["one"], "-m", 16000, "--json", ray=ray)
        out["run"].append(took)
        cpu["run"].append(b.last_cpu)
        task_id = json.loads(text)["task_id"]
        out["del"].append(b.cli("del", task_id, ray=ray)[0])
        cpu["del"].append(b.last_cpu)
    return out, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ray-repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="Print the medians as JSON too.")
    opts = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dlcl-", dir="/tmp"))  # short: sockets live under it
    b = Bench(base)
    try:
        s = setup(b)
        floor = statistics.median(b.floor() for _ in range(opts.repeats))
        # idle, the queued whole-GPU run must wait as it does with the runs training: only the analyzer's
        # GPU (2000 MB of it held) is enabled meanwhile
        row = json.loads(b.cli("tasks", "--json")[1])[0]
        b.cli("config", "--devices", f"{row['node']}:gpu{row['gpus'][0]}")
        idle, idle_cpu = measure(b, s, opts.repeats, ray=False)
        b.cli("config", "--devices", "all")
        start_training(b, s)
        fast, fast_cpu = measure(b, s, opts.repeats, ray=False)
        slow, _ = measure(b, s, opts.ray_repeats, ray=True)
    finally:
        with contextlib.suppress(Exception):
            b.cli("down", "--force", check=False)
        shutil.rmtree(base, ignore_errors=True)
    summary: dict[str, Any] = {"python_c_pass_s": round(floor, 4), "commands": {}}
    print(f"python -c pass: {floor * 1000:.0f} ms (median of {opts.repeats})")
    print("three runs training and an analyzer loaded (idle: the analyzer only; CPU: the command's own):")
    print(
        f"{'command':8} {'fast path':>10} {'via Ray':>10} {'fast/pass':>10} {'fast/Ray':>9}  {'goal':11}"
        f" {'idle':>7} {'CPU':>7} {'idle CPU':>8}"
    )
    med = statistics.median
    for name, goal in GOALS.items():
        f, r = med(fast[name]), med(slow[name])
        verdict = "PASS" if f <= goal else "MISS"
        print(
            f"{name:8} {f:9.3f}s {r:9.3f}s {f / floor:9.1f}x {f / r:8.2f}x  <= {goal} s {verdict}"
            f" {med(idle[name]):6.3f}s {med(fast_cpu[name]):6.3f}s {med(idle_cpu[name]):7.3f}s"
        )
        summary["commands"][name] = {
            "fast_s": round(f, 4),
            "ray_s": round(r, 4),
            "fast_over_pass": round(f / floor, 2),
            "fast_over_ray": round(f / r, 3),
            "goal_s": goal,
            "met": f <= goal,
            "idle_s": round(med(idle[name]), 4),
            "cpu_s": round(med(fast_cpu[name]), 4),
            "idle_cpu_s": round(med(idle_cpu[name]), 4),
        }
    if opts.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
