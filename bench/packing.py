"""Packing quality: a discrete-event simulation of 500 runs on 8 x 80 GB GPUs through each policy.

Runs (seeded): memory 1-40 GB, duration 1-60 min, all queued at time 0 in random order. A run holds its
memory for its duration. Printed: makespan / lower bound, where the lower bound is
max(sum(memory x duration) / total memory, longest run). Compared policies:

* dlnest-ray: ``scheduling.policy.decide`` with its default settings (best fit by memory, backfill,
  1-hour starvation bound);
* DLNest: strict FIFO first fit — only the oldest pending run is considered (head-of-line blocking);
* Ray fractional: every run asks ``num_gpus=0.5`` (a fixed fraction that keeps the 40 GB worst case
  safe on 80 GB), so at most two runs share a GPU whatever their memory.

Goal for dlnest-ray: <= 1.15.    Usage: python bench/packing.py [--seeds 9]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlnest_ray.scheduling.policy import decide
from dlnest_ray.scheduling.specs import GpuState, Launch, Settings, Snapshot, TaskSpec

N_GPUS, GPU_MB = 8, 80 * 1024


@dataclass(frozen=True)
class Run:
    rid: str
    mb: int
    minutes: float


def runs(seed: int, n: int = 500) -> list[Run]:
    rng = random.Random(seed)
    return [Run(f"T_{i:04d}", rng.randint(1, 40) * 1024, rng.uniform(1, 60)) for i in range(n)]


# A placer gets (pending runs, free MB per GPU, run count per GPU, now) and returns [(run, gpu)].
Placer = Callable[[list[Run], list[int], list[int], float], list[tuple[Run, int]]]


def dlnest_ray(pending: list[Run], free: list[int], count: list[int], now: float) -> list[tuple[Run, int]]:
    gpus = tuple(
        GpuState(node="n", index=i, total_mb=GPU_MB, free_mb=free[i], tasks=count[i]) for i in range(N_GPUS)
    )
    specs = [TaskSpec(task_id=r.rid, memory_mb=r.mb, submitted_at=0.0) for r in pending]
    by_id = {r.rid: r for r in pending}
    snap = Snapshot(gpus=gpus, settings=Settings(), now=now * 60)  # the policy's defaults
    return [(by_id[d.task_id], d.gpus[0]) for d in decide(specs, snap) if isinstance(d, Launch)]


def dlnest_fifo(pending: list[Run], free: list[int], count: list[int], now: float) -> list[tuple[Run, int]]:
    out, free = [], list(free)
    for r in pending:  # only the head may start; the rest wait behind it
        gpu = next((i for i in range(N_GPUS) if free[i] > r.mb), None)
        if gpu is None:
            break
        free[gpu] -= r.mb
        out.append((r, gpu))
    return out


def ray_fractional(
    pending: list[Run], free: list[int], count: list[int], now: float
) -> list[tuple[Run, int]]:
    out, slots = [], [2 - c for c in count]
    for r in pending:
        gpu = next((i for i in range(N_GPUS) if slots[i] > 0), None)
        if gpu is None:
            break
        slots[gpu] -= 1
        out.append((r, gpu))
    return out


def simulate(placer: Placer, work: list[Run]) -> float:
    pending = list(work)
    free, count = [GPU_MB] * N_GPUS, [0] * N_GPUS
    events: list[tuple[float, int, int, int]] = []  # (end, seq, gpu, mb)
    now, seq = 0.0, 0
    while pending or events:
        for r, gpu in placer(pending, free, count, now):
            assert free[gpu] >= r.mb, "a placer oversubscribed a GPU"
            free[gpu] -= r.mb
            count[gpu] += 1
            heapq.heappush(events, (now + r.minutes, seq, gpu, r.mb))
            seq += 1
            pending.remove(r)
        if not events:
            raise RuntimeError("nothing runs and nothing can start")
        now, _, gpu, mb = heapq.heappop(events)
        free[gpu] += mb
        count[gpu] -= 1
        while events and events[0][0] == now:
            _, _, g2, mb2 = heapq.heappop(events)
            free[g2] += mb2
            count[g2] -= 1
    return now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=9)
    opts = ap.parse_args()
    placers: dict[str, Placer] = {
        "dlnest-ray": dlnest_ray,
        "DLNest FIFO first-fit": dlnest_fifo,
        "Ray fractional 0.5": ray_fractional,
    }
    ratios: dict[str, list[float]] = {k: [] for k in placers}
    for seed in range(opts.seeds):
        work = runs(seed)
        bound = max(sum(r.mb * r.minutes for r in work) / (N_GPUS * GPU_MB), max(r.minutes for r in work))
        for name, placer in placers.items():
            ratios[name].append(simulate(placer, work) / bound)
    for name, vals in ratios.items():
        goal = " (goal <= 1.15)" if name == "dlnest-ray" else ""
        print(
            f"packing: {name:24s} makespan / lower bound = {statistics.median(vals):.3f}{goal} "
            f"[seeds: {', '.join(f'{v:.3f}' for v in vals)}]"
        )


if __name__ == "__main__":
    main()
