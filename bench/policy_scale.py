"""One scheduling pass with 1,000 pending tasks on 8 nodes x 8 GPUs (80 GB each).

Tasks (seeded): 80% single-GPU with 1-40 GB, 10% DDP over 2-4 GPUs, 5% multi-GPU, 5% CPU; GPUs start
partly used. Times ``scheduling.policy.decide`` and prints the median against the goal.

Goal: <= 20 ms per pass.    Usage: python bench/policy_scale.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlnest_ray.scheduling.policy import decide
from dlnest_ray.scheduling.specs import GpuState, Launch, Placement, Settings, Snapshot, TaskSpec

GPU_MB = 80 * 1024


def workload(seed: int, n_tasks: int = 1000) -> tuple[list[TaskSpec], tuple[GpuState, ...]]:
    rng = random.Random(seed)
    gpus = tuple(
        GpuState(
            node=f"node{n}", index=i, total_mb=GPU_MB, free_mb=rng.randint(0, GPU_MB), tasks=rng.randint(0, 3)
        )
        for n in range(8)
        for i in range(8)
    )
    tasks = []
    for t in range(n_tasks):
        r = rng.random()
        mb = rng.randint(1, 40) * 1024
        if r < 0.80:
            spec = TaskSpec(task_id=f"T_{t:04d}", memory_mb=mb, submitted_at=t)
        elif r < 0.90:
            k = rng.randint(2, 4)
            spec = TaskSpec(
                task_id=f"T_{t:04d}", placement=Placement.DDP, memory_mb=mb * k, gpus=k, submitted_at=t
            )
        elif r < 0.95:
            spec = TaskSpec(task_id=f"T_{t:04d}", placement=Placement.MULTI, memory_mb=mb * 3, submitted_at=t)
        else:
            spec = TaskSpec(task_id=f"T_{t:04d}", placement=Placement.CPU, submitted_at=t)
        tasks.append(spec)
    return tasks, gpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    opts = ap.parse_args()
    times, launched = [], []
    for rep in range(opts.repeats + 1):
        tasks, gpus = workload(rep)
        snap = Snapshot(gpus=gpus, settings=Settings(starvation_s=600), now=1200.0)
        t0 = time.perf_counter()
        out = decide(tasks, snap)
        elapsed = time.perf_counter() - t0
        if rep:  # the first pass warms up
            times.append(elapsed)
            launched.append(sum(isinstance(d, Launch) for d in out))
    med = statistics.median(times) * 1e3
    print(
        f"policy_scale: 1000 pending tasks, 8 nodes x 8 GPUs: median {med:.2f} ms per pass "
        f"(max {max(times) * 1e3:.2f} ms; {statistics.median(launched):.0f} launched) — goal <= 20 ms, "
        f"ratio {med / 20:.2f}"
    )


if __name__ == "__main__":
    main()
