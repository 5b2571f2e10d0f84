"""Analyzer latency: one experiment script on a warm analyzer versus the foreground analyze of the same
script, for a real MNIST package (one epoch on the CPU).

Warm: the CLI's Python client on a local Ray with one (logical) GPU: ``submit_exp`` + ``poll_exp`` until
the job has ended and its line arrived (what ``dlnest-ray exp A_ID ping`` does after connecting).
Anchor: ``dlnest-ray analyze PACKAGE --script ping --cpu`` as a new process (interpreter start, imports,
dataset and model build, checkpoint load, the script). Both run the same one-line script.

Goals: median anchor / warm >= 20, and the warm round trip <= 150 ms.
Usage: python bench/analyzer_latency.py [--repeats 30] [--anchor-repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
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


def train_package(root: Path) -> Path:
    """A fresh MNIST project trained one epoch in the foreground; returns its package."""
    from dlnest_ray.cli.project import create_project
    from dlnest_ray.runtime.trainer import TrainOptions, train
    from dlnest_ray.savepack.package import SavePackage

    project = create_project(root / "mnist", mnist=True)
    (project / "AnalyzeScripts" / "ping.py").write_text(PING)
    freq = project / "one_epoch.json"
    freq.write_text(json.dumps({"epochs": 1}))
    pkg = SavePackage(str(project / "root_config.json"), str(freq))
    path = pkg.save_to_new_dir()
    assert path is not None
    train(path, TrainOptions(cpu=True))
    return Path(path)


def warm_round_trip(client: Any, task_id: str) -> float:
    start = time.perf_counter()
    job = client.submit_exp(task_id, "ping")
    offset, lines = 0, []
    while True:
        out = client.poll_exp(task_id, int(job["job"]), offset, wait_s=1.0)
        lines += out["lines"]
        offset, job = int(out["end"]), out["job"]
        if job["state"] in ("SUCCEEDED", "FAILED", "INTERRUPTED"):
            break
    took = time.perf_counter() - start
    if job["state"] != "SUCCEEDED" or not lines or not lines[0].startswith("pong"):
        raise SystemExit(f"the warm script did not run: {job} {lines}")
    return took


def foreground(package: Path) -> float:
    env = {**os.environ, "DLNEST_MNIST_DIR": str(MNIST)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", "analyze", str(package), "--script", "ping", "--cpu"],
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - start
    if proc.returncode != 0 or "pong" not in proc.stdout:
        raise SystemExit(f"the foreground analyze failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--anchor-repeats", type=int, default=3)
    opts = parser.parse_args()
    os.environ.setdefault("DLNEST_MNIST_DIR", str(MNIST))
    os.environ.setdefault("DLNEST_RAY_FAKE_GPUS", "1x16000")  # the analyzer's GPU is logical here
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["DLNEST_RAY_HOME"] = str(root / "home")
        package = train_package(root)
        import ray

        from dlnest_ray.actors.center_actor import get_or_create_center
        from dlnest_ray.actors.client import Client
        from dlnest_ray.actors.names import NAMESPACE

        ray.init(num_cpus=2, num_gpus=1, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
        try:
            client = Client(get_or_create_center(str(root / "home")))
            task_id = client.analyze(str(package))
            client.analyzer(task_id, wait=True)
            client.run_exp(task_id, "ping")  # warm-up: the script's first import
            warm = [warm_round_trip(client, task_id) for _ in range(opts.repeats)]
            client.del_task(task_id)
        finally:
            ray.shutdown()
        anchor = [foreground(package) for _ in range(opts.anchor_repeats)]
    w, a = statistics.median(warm), statistics.median(anchor)
    print(
        f"warm exp round trip (client): median {w * 1000:.1f} ms (min {min(warm) * 1000:.1f}, n={len(warm)})"
    )
    print(f"foreground analyze --script:     median {a * 1000:.0f} ms  (n={len(anchor)})")
    print(f"ratio foreground / warm: {a / w:.0f}x   (goal >= 20x; warm goal <= 150 ms)")


if __name__ == "__main__":
    main()
