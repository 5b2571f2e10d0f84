"""Packing quality: a discrete-event simulation of 500 runs on 8 x 80 GB GPUs through each policy.

Runs (seeded): memory 1-40 GB, duration 1-60 min, all queued at time 0 in random order. A run holds its
memory for its duration. Printed: makespan / lower bound, where the lower bound is
max(sum(memory x duration) / total memory, longest run). Compared policies:

* dlnest-ray: ``scheduling.policy.decide`` with its default settings (best fit by memory, backfill,
  1-hour starvation bound);
* DLNest: strict FIFO first fit — only the oldest pending run is considered (head-of-line blocking);
* Ray fractional: every run asks ``num_gpus=0.5`` (a fixed fraction that keeps the 40 GB worst case
  safe on 80 GB), so at most two runs share a GPU whatever their memory.

Goal for dlnest-ray: <= 1.15.

Memory you can trust (issue 13): the same trace and cluster, but a run's memory is no longer what it
asks for. Its true peak is the trace's memory; its request is drawn independently (a second seeded
stream): half the runs leave the default (90% of a GPU), the others ask for peak x U(0.8, 3) (at most a
GPU). A run has 2-20 epochs; it allocates peak x U(0.4, 0.8) when it starts and reaches its peak at
30-70% of its first epoch (validation), keeping it to the end (the caching allocator does not give
memory back). ``--late P``: a share P of the runs reaches its peak only at 30-70% of its whole
duration instead (a bigger batch late in the run). Scheduling passes, with the real ``decide``, run at
every end, kill, cooldown expiry (60 s, the center's default delay) and right-sizing. Policies:

* (a) today: the Snapshot has NVML free (total less the true current use of every run) less the
  reservations of runs launched within the cooldown; no holders.
* (b) whole-run reservations: as (a) plus holders = max(reservation, measured peak so far); a run
  reports its peak at the end of its first epoch (and of the epoch in which a late peak came).
* (c) (b) + right-sizing + caps: at the end of its first epoch an auto run (default request) has its
  reservation lowered to max(peak, ceil(measured x 1.15)); an explicit request is kept. Each run is
  capped at its reservation: allocating past it fails that run alone.

Failures. A run whose allocation (start or growth) takes its card past its total gets the
out-of-memory error itself (the allocating process, as CUDA does). It counts as "killed by another's
growth" when its use is still within its own reservation (what the policy gave it): a neighbour was
admitted into memory it had asked for, or a neighbour outgrew its own. Otherwise (it outgrew its
reservation: an under-guess; under (c) always at its cap, whatever the card holds) it counts as
"failed alone". Either way it is resubmitted at once at the end of the queue and starts over: a kill
with the same request, a lone failure with ``--memory ceil(peak x 1.15)`` as the out-of-memory message
suggests. Makespan includes the reruns; the lower bound is max(sum(true peak x duration) / total
memory, longest run). Goal for (c): <= 1.20 and no run killed by another's growth.

Two more lines say where (c) loses against that bound: "(c) with learned estimates" starts an auto
run at ceil(peak x 1.15) instead of 90% of a GPU (what ``--memory auto`` gives once the project has
history or a running twin), and "(c) every run asks peak x 1.15" (every request exact up to the margin,
nobody under-guesses) is the best any policy that keeps the 1.15 margin can do on this trace. The
memory simulations run on two processes; ``--epochs LO,HI`` changes the range of epoch counts.

Usage: python bench/packing.py [--seeds 9] [--memory-seeds 3] [--late 0.0] [--epochs 2,20]
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import random
import statistics
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dlnest_ray.scheduling.policy import decide
from dlnest_ray.scheduling.specs import (
    DEFAULT_MARGIN,
    DEFAULT_MEMORY_FRACTION,
    GpuState,
    Holder,
    Launch,
    Settings,
    Snapshot,
    TaskSpec,
)

N_GPUS, GPU_MB = 8, 80 * 1024
COOLDOWN_MIN = 1.0  # the center's default delay: a launch's reservation counts this long


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


# ------------------------------------------------------------------------------ memory you can trust
@dataclass(frozen=True)
class MemRun:
    rid: str
    peak: int  # true peak per GPU, MB
    base: int  # what it allocates at start, MB
    minutes: float
    grow_at: float  # minutes after start when it reaches its peak
    epoch: float  # minutes per epoch
    guess: int | None  # --memory, or None: the default (90% of a GPU; auto under (c))


def mem_runs(seed: int, late: float, epochs: tuple[int, int] = (2, 20)) -> list[MemRun]:
    rng = random.Random(f"memory-{seed}")  # independent of the trace's own stream
    out = []
    for r in runs(seed):
        epoch = r.minutes / rng.randint(*epochs)
        grow_at = rng.uniform(0.3, 0.7) * (r.minutes if rng.random() < late else epoch)
        guess = None if rng.random() < 0.5 else min(GPU_MB, int(r.mb * rng.uniform(0.8, 3.0)))
        base = int(r.mb * rng.uniform(0.4, 0.8))
        out.append(MemRun(r.rid, r.mb, base, r.minutes, grow_at, epoch, guess))
    return out


def with_margin(peak: int) -> int:
    """What the out-of-memory message suggests (and a learned estimate): ceil(peak x margin / 100) x 100."""
    return math.ceil(peak * DEFAULT_MARGIN / 100) * 100


@dataclass
class Live:
    run: MemRun
    gpu: int
    start: float
    request: int | None  # what its TaskSpec asked for (a kill resubmits the same)
    res: int  # current reservation (mb_per_gpu; lowered by right-sizing)
    auto: bool
    use: int = 0
    measured: int = 0
    sized: bool = False


@dataclass(frozen=True)
class MemResult:
    makespan: float
    killed_by_other: int
    failed_alone: int


def simulate_memory(work: list[MemRun], policy: str, learned: bool = False) -> MemResult:
    """Event simulation of one policy ("a", "b" or "c", see the module docstring). ``learned``: an auto
    run starts at ceil(peak x margin) instead of 90% of a GPU (what learning gives with history)."""
    holds, right_size = policy in ("b", "c"), policy == "c"
    by_id = {r.rid: r for r in work}
    auto = {r.rid: r.guess is None for r in work}
    pending = [
        TaskSpec(task_id=r.rid, memory_mb=with_margin(r.peak) if learned and auto[r.rid] else r.guess)
        for r in work
    ]
    live: dict[str, Live] = {}
    attempt = dict.fromkeys(by_id, 0)
    events: list[tuple[float, int, str, str, int]] = []  # (time, seq, kind, rid, attempt)
    seq = 0
    now = makespan = 0.0
    killed = alone = 0

    def push(t: float, kind: str, rid: str) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, rid, attempt[rid]))
        seq += 1

    def on(gpu: int) -> list[Live]:
        return [x for x in live.values() if x.gpu == gpu]

    def fail(x: Live, *, by_other: bool) -> None:
        nonlocal killed, alone
        rid = x.run.rid
        del live[rid]
        attempt[rid] += 1
        if attempt[rid] > 50:
            raise RuntimeError(f"{rid} keeps failing")
        if by_other:
            killed += 1
            mb = x.request
        else:
            alone += 1
            mb, auto[rid] = with_margin(x.run.peak), False
        pending.append(TaskSpec(task_id=rid, memory_mb=mb, submitted_at=now * 60))

    def allocate(x: Live, mb: int) -> None:
        """``x`` grows to ``mb``: its cap (c) or the card may refuse."""
        x.use = mb
        if right_size and mb > x.res:
            fail(x, by_other=False)  # its own cap: torch's OutOfMemoryError in its own process
        elif sum(y.use for y in on(x.gpu)) > GPU_MB:
            fail(x, by_other=mb <= x.res)

    def state(g: int) -> GpuState:
        runs_on = on(g)
        recent = sum(x.res for x in runs_on if now - x.start < COOLDOWN_MIN)
        held = tuple(Holder(task_id=x.run.rid, mb=max(x.res, x.measured)) for x in runs_on) if holds else ()
        free = max(0, GPU_MB - sum(x.use for x in runs_on))
        return GpuState(
            node="n",
            index=g,
            total_mb=GPU_MB,
            free_mb=free,
            tasks=len(runs_on),
            recent_mb=recent,
            holders=held,
        )

    def schedule() -> None:
        gpus = tuple(state(g) for g in range(N_GPUS))
        smallest = min(
            GPU_MB * DEFAULT_MEMORY_FRACTION if t.memory_mb is None else t.memory_mb for t in pending
        )
        if all(g.usable_mb < smallest for g in gpus):
            return  # nothing can launch: the pass would only compute wait reasons
        decisions = decide(pending, Snapshot(gpus=gpus, settings=Settings(), now=now * 60))
        started = {d.task_id: d for d in decisions if isinstance(d, Launch)}
        keep = []
        for spec in pending:
            d = started.get(spec.task_id)
            if d is None:
                keep.append(spec)
                continue
            r = by_id[spec.task_id]
            x = Live(r, d.gpus[0], now, spec.memory_mb, d.mb_per_gpu, auto[r.rid])
            live[r.rid] = x
            for kind, t in (
                ("cool", COOLDOWN_MIN),
                ("grow", r.grow_at),
                ("report", r.epoch),  # end of the first epoch
                ("report", math.ceil(r.grow_at / r.epoch) * r.epoch),  # end of the epoch of its peak
                ("end", r.minutes),
            ):
                push(now + t, kind, r.rid)
            allocate(x, r.base)
        pending[:] = keep

    schedule()
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, kind, rid, att = heapq.heappop(events)
            x = live.get(rid)
            if x is None or att != attempt[rid]:
                continue  # the attempt this event belonged to failed
            if kind == "grow":
                allocate(x, x.run.peak)
            elif kind == "report":
                x.measured = max(x.measured, x.use)
                if right_size and x.auto and not x.sized:
                    x.sized = True
                    x.res = min(x.res, max(x.measured, math.ceil(x.measured * DEFAULT_MARGIN)))
            elif kind == "end":
                del live[rid]
                makespan = now
        if pending:
            schedule()
            if not events:
                raise RuntimeError("nothing runs and nothing can start")
    return MemResult(makespan, killed, alone)


MEMORY_POLICIES = {  # name: (policy, learned, every run asks for exactly peak x margin)
    "(a) today: cooldown, then NVML": ("a", False, False),
    "(b) whole-run reservations": ("b", False, False),
    "(c) + right-sizing + caps": ("c", False, False),
    "(c) with learned estimates": ("c", True, False),
    "(c) every run asks peak x 1.15": ("c", False, True),
}


def memory_job(job: tuple[str, int, float, tuple[int, int]]) -> tuple[str, int, float, MemResult]:
    """One (policy, seed) simulation: (name, seed, lower bound, result); a process-pool job."""
    name, seed, late, epochs = job
    policy, learned, exact = MEMORY_POLICIES[name]
    work = mem_runs(seed, late, epochs)
    bound = max(sum(r.peak * r.minutes for r in work) / (N_GPUS * GPU_MB), max(r.minutes for r in work))
    if exact:
        work = [replace(r, guess=with_margin(r.peak)) for r in work]
    return name, seed, bound, simulate_memory(work, policy, learned)


def memory_section(seeds: int, late: float, epochs: tuple[int, int]) -> None:
    jobs = [(name, seed, late, epochs) for seed in range(seeds) for name in MEMORY_POLICIES]
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        done = sorted(pool.map(memory_job, jobs), key=lambda j: j[1])
    print(
        f"packing (memory; {seeds} seeds; peak in the first epoch of {epochs[0]}-{epochs[1]}, late for "
        f"{late:.0%} of the runs; half the runs at the {DEFAULT_MEMORY_FRACTION:.0%} default):"
    )
    for name in MEMORY_POLICIES:
        mine = [(bound, res) for n, _, bound, res in done if n == name]
        vals = [res.makespan / bound for bound, res in mine]
        killed = [res.killed_by_other for _, res in mine]
        alone = [res.failed_alone for _, res in mine]
        goal = " (goal <= 1.20)" if name.startswith("(c) +") else ""
        print(
            f"packing: {name:31s} makespan / lower bound = {statistics.median(vals):.3f}{goal} "
            f"[seeds: {', '.join(f'{v:.3f}' for v in vals)}]; killed by another's growth: "
            f"{sum(killed)}{' (goal 0)' if goal else ''}; failed alone: {sum(alone)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=9)
    ap.add_argument("--memory-seeds", type=int, default=3, help="seeds of the memory section (0: skip it)")
    ap.add_argument("--late", type=float, default=0.0, help="share of runs that reach their peak late")
    ap.add_argument("--epochs", default="2,20", help="range of a run's epoch count (default 2,20)")
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
    if opts.memory_seeds:
        lo, hi = (int(v) for v in opts.epochs.split(","))
        memory_section(opts.memory_seeds, opts.late, (lo, hi))


if __name__ == "__main__":
    main()
