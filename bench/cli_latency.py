"""CLI latency: how long `tasks`, `exp`, `run` and `del` take as commands a person types, against a warm
local cluster (`dlnest-ray up`, fake GPUs) with three runs training — process start included.

Each command runs as a new process (``python -m dlnest_ray ...``), median of ``--repeats`` (20) on the
fast path (the center's local socket) and of ``--ray-repeats`` (5) through a Ray connection
(``DLNEST_RAY_NO_FAST_PATH=1``), beside ``python -c pass`` (the floor: interpreter start).

* ``tasks``: the task table, three MNIST runs training.
* ``exp``: a one-line script (``print('pong', ...)``) on a warm analyzer of an MNIST package.
* ``run``: queue a run of the MNIST project (the package copy included); it waits (``-m`` a whole GPU).
* ``del``: remove that pending run.

Goals (issue 16): tasks <= 0.3 s, exp <= 0.4 s, run <= 0.8 s, del <= 0.4 s.
Usage: python bench/cli_latency.py [--repeats 20] [--ray-repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
        """Run ``dlnest-ray ARGS``; (seconds, stdout)."""
        env = {**self.env, "DLNEST_RAY_NO_FAST_PATH": "1"} if ray else self.env
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "dlnest_ray", *map(str, args)], env=env, capture_output=True, text=True
        )
        took = time.perf_counter() - start
        if check and proc.returncode != 0:
            raise SystemExit(f"dlnest-ray {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
        return took, proc.stdout

    def floor(self) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=self.env, check=True)
        return time.perf_counter() - start


def setup(b: Bench) -> dict[str, Any]:
    """Up, an MNIST project, a trained package with an analyzer, three runs training."""
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
    for _ in range(3):
        b.cli("run", config, "-f", long, "-m", 5000)
    _, out = b.cli("analyze", pkg, "-m", 2000, "--json")
    analyzer = json.loads(out)["task_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the analyzer loaded, the three runs past their start
        rows = json.loads(b.cli("tasks", "--json")[1])
        if all(r["status"] == "RUNNING" and r.get("phase") in ("running", "ready", "busy") for r in rows):
            break
        time.sleep(1)
    else:
        raise SystemExit(f"the runs and the analyzer did not start: {rows}")
    b.cli("exp", analyzer, "ping")  # warm-up: the script's first import
    return {"config": config, "one": one, "analyzer": analyzer}


def measure(b: Bench, s: dict[str, Any], repeats: int, ray: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"tasks": [], "exp": [], "run": [], "del": []}
    for _ in range(repeats):
        out["tasks"].append(b.cli("tasks", ray=ray)[0])
        took, text = b.cli("exp", s["analyzer"], "ping", ray=ray)
        if "pong" not in text:
            raise SystemExit(f"exp did not run its script: {text}")
        out["exp"].append(took)
        took, text = b.cli("run", s["config"], "-f", s["one"], "-m", 16000, "--json", ray=ray)
        out["run"].append(took)
        task_id = json.loads(text)["task_id"]
        out["del"].append(b.cli("del", task_id, ray=ray)[0])
    return out


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
        fast = measure(b, s, opts.repeats, ray=False)
        slow = measure(b, s, opts.ray_repeats, ray=True)
    finally:
        with contextlib.suppress(Exception):
            b.cli("down", "--force", check=False)
        shutil.rmtree(base, ignore_errors=True)
    summary: dict[str, Any] = {"python_c_pass_s": round(floor, 4), "commands": {}}
    print(f"python -c pass: {floor * 1000:.0f} ms (median of {opts.repeats})")
    print(f"{'command':8} {'fast path':>10} {'via Ray':>10} {'fast/pass':>10} {'fast/Ray':>9}  goal")
    for name, goal in GOALS.items():
        f, r = statistics.median(fast[name]), statistics.median(slow[name])
        verdict = "PASS" if f <= goal else "MISS"
        print(f"{name:8} {f:9.3f}s {r:9.3f}s {f / floor:9.1f}x {f / r:8.2f}x  <= {goal} s {verdict}")
        summary["commands"][name] = {
            "fast_s": round(f, 4),
            "ray_s": round(r, 4),
            "fast_over_pass": round(f / floor, 2),
            "fast_over_ray": round(f / r, 3),
            "goal_s": goal,
            "met": f <= goal,
        }
    if opts.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
