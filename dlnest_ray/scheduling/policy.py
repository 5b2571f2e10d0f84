"""The scheduling policy: pending tasks + a snapshot of the GPUs → one decision per task (pure).

Rules:

* A GPU task needs ``memory_mb`` (default 90% of the GPU's total) on one GPU whose usable memory
  covers it and whose task count is below the maximum; among those, best fit (least memory left over).
* Usable memory holds reservations for the whole run: it is the smaller of NVML's free memory less
  what runs launched within the cooldown reserved (memory of other programs counts through NVML) and
  the GPU's total less, for every dlnest-ray task running there (``GpuState.holders``), the larger of
  its reservation and its measured peak. A run that has not grown to its reservation yet, or that
  will grow again, keeps its share, so a task placed beside it never relies on memory it may take
  back. When memory is what blocks, the wait reason names what holds the best GPU, largest first
  (``needs 6000 MB on 1 GPU; a:gpu0 has 4200 MB left after T_0003 (9000) and T_0005 (2800)``), and
  what other programs use when NVML's free memory is the tighter bound.
* ``multi``/``ddp`` without ``gpus``: when no single GPU fits, the fewest GPUs of one node that each
  cover ``ceil(memory / k)``. ``gpus=K``: exactly K GPUs of one node. Ranks always get distinct GPUs.
* Every rank holds ``cpus_per_rank`` CPUs of its node (a DDP run one per GPU): a task goes only where
  its node has those CPUs free (Ray would otherwise leave it waiting for them while it looked running
  and held its GPU memory). A CPU task needs no GPU and never waits behind GPU tasks, only for CPUs; it
  goes to the node with the most free CPUs. Nodes whose CPUs are unknown do not limit anything.
* While ``down`` drains the center, nothing launches: every pending task waits for the next ``up``.
* Backfill: a task that does not fit does not block the tasks behind it, but the oldest task that
  has waited longer than ``settings.starvation_s`` reserves the GPUs it waits for (the most free ones
  it could use), so younger tasks cannot keep taking them. One reservation at a time, as in EASY
  backfilling: starving tasks are served oldest first while the other GPUs keep backfilling.
* Disabled GPUs are never chosen. Every waiting task gets a reason a person can act on.
* Priorities: pending tasks are served highest priority first (submit order within a priority). A GPU
  task that fits nowhere may *preempt*: when stopping running tasks of one node whose priority is
  strictly lower and that may be preempted (``Holder.preemptible``) would let it fit there, the policy
  returns :class:`Preempt` with the fewest such victims (then the most recently started). The task
  waits while they stop, and the GPUs it will take are held for it, so nothing of lower priority takes
  the memory being freed. CPU tasks neither preempt nor count as victims (they hold no GPU).

:func:`infeasible` says, at submit time, when no GPU layout could ever satisfy a request. The pass's
state (what launches decided so far take, and why a task does not fit) is :class:`.pool.Pool`; the
victim search, :func:`.preemption.preemption`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .pool import Pool, cpus_text, need_mb
from .preemption import preemption
from .specs import (
    Decision,
    GpuState,
    Launch,
    Placement,
    Preempt,
    Settings,
    Snapshot,
    TaskSpec,
    Wait,
)

__all__ = ["DRAINING_REASON", "decide", "infeasible"]

DRAINING_REASON = "dlnest-ray is going down (`dlnest-ray down`): it starts after the next `up`"


def infeasible(task: TaskSpec, gpus: Sequence[GpuState], settings: Settings | None = None) -> str | None:
    """Why no node could ever run ``task`` (ignoring current load), or None when some node could."""
    settings = settings or Settings()
    if task.placement is Placement.CPU:
        return None
    if not gpus:
        return "no node of the cluster has a GPU; submit with --cpu"
    nodes: dict[str, list[GpuState]] = {}
    for g in gpus:
        nodes.setdefault(g.node, []).append(g)
    most = max(len(v) for v in nodes.values())
    largest = max(g.total_mb for g in gpus)
    if task.gpus is not None and task.gpus > most:
        return f"asks for {task.gpus} GPUs but no node has more than {most}"
    for node_gpus in nodes.values():
        totals = sorted((g.total_mb for g in node_gpus), reverse=True)
        counts = (
            [task.gpus]
            if task.gpus is not None
            else (range(1, len(totals) + 1) if task.placement.spreads else [1])
        )
        for k in counts:
            if k <= len(totals) and all(need_mb(task, t, k, settings) <= t for t in totals[:k]):
                return None
    if task.placement.spreads:
        k = task.gpus or most
        return f"needs {task.memory_mb} MB over {k} GPU(s) of one node, more than the GPUs of any node hold"
    return (
        f"needs {task.memory_mb} MB on one GPU but the largest GPU has {largest} MB; "
        "use --multi-gpu or --ddp to spread it over several GPUs"
    )


def _names(ids: Sequence[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]}"


def decide(pending: Sequence[TaskSpec], snapshot: Snapshot) -> list[Decision]:
    """One decision per pending task, highest priority first (submit order within a priority);
    launches and preemptions within the pass see each other."""
    if snapshot.draining:
        return [Wait(task_id=t.task_id, reason=DRAINING_REASON) for t in pending]
    pool = Pool(snapshot.gpus, snapshot.settings, snapshot.cpus)
    failed: dict[tuple[Placement, int | None, int | None, float, int], tuple[int, str]] = {}
    out: list[Decision] = []
    taken: set[str] = set()  # victims chosen in this pass
    for task in sorted(pending, key=lambda t: -t.priority):  # stable: submit order within a priority
        if task.placement is Placement.CPU:
            need = task.cpus_on(1)
            node, fits = pool.cpu_node(need)
            if fits:
                pool.take_cpus(node, need)
                out.append(Launch(task_id=task.task_id, node=node, gpus=(), mb_per_gpu=0))
            else:
                free = max(0.0, pool.cpus.get(node or "", 0.0))
                why = f"needs {cpus_text(need)} on one node; the most free is {free:g} (on {node})"
                out.append(Wait(task_id=task.task_id, reason=why))
            continue
        stopping = pool.stopping.get(task.task_id, {})  # tasks preempted for it, still stopping
        starving = snapshot.now - task.submitted_at > snapshot.settings.starvation_s
        key = (task.placement, task.memory_mb, task.gpus, task.cpus_per_rank, task.priority)
        cached = failed.get(key)
        # a starving task only differs from its twins when it may still take the one reservation
        if (
            cached is not None
            and cached[0] == pool.version
            and (not starving or pool.held_for)
            and not stopping
        ):
            out.append(Wait(task_id=task.task_id, reason=cached[1]))
            continue
        found = pool.place(task)
        if found is not None:
            node, positions, mb = found
            pool.take(positions, mb, task.task_id)
            pool.take_cpus(node, task.cpus_on(len(positions)))
            gpus = tuple(pool.gpus[i].index for i in positions)
            out.append(Launch(task_id=task.task_id, node=node, gpus=gpus, mb_per_gpu=mb))
            continue
        reason = pool.explain_cpus(task) or pool.explain(task)
        waits_for = next(
            ((n, vs, pos) for n, vs in sorted(stopping.items()) if (pos := pool.place_without(task, vs, n))),
            None,
        )
        if waits_for is not None:  # preempted for it earlier: their share is its once they have stopped
            node, victims, positions = waits_for
            pool.hold(positions, task.task_id)
            ids = [v.task_id for v in victims]
            out.append(
                Wait(task_id=task.task_id, reason=f"waiting for {_names(ids)} to stop (preempted for it)")
            )
            continue
        if pool.lowest_priority is not None and pool.lowest_priority < task.priority:
            chosen = preemption(pool, task, taken)
            if chosen is not None:
                node, chosen_victims, positions = chosen
                names = [v.task_id for v in chosen_victims]
                taken.update(names)
                pool.hold(positions, task.task_id)
                why = f"preempting {_names(names)} (lower priority) on {node}"
                out.append(Preempt(task_id=task.task_id, node=node, victims=tuple(names), reason=why))
                continue
        if not starving or pool.held_for:  # only the oldest starving task holds GPUs (EASY backfilling)
            failed[key] = (pool.version, reason)
            out.append(Wait(task_id=task.task_id, reason=reason))
            continue
        # Hold the fewest GPUs that could ever run it, the most free first: they fit soonest.
        target = next((t for k in pool.counts(task) if (t := pool.fit(task, k, ignore_load=True))), None)
        labels: tuple[str, ...] = ()
        if target is not None:
            pool.hold(target[1], task.task_id)
            labels = tuple(pool.gpus[i].label for i in target[1])
            waited = snapshot.now - task.submitted_at
            reason = f"{reason}; waiting {waited:.0f} s, so {', '.join(labels)} is held for it"
        out.append(Wait(task_id=task.task_id, reason=reason, reserving=labels))
    return out
