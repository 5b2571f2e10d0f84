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

:func:`infeasible` says, at submit time, when no GPU layout could ever satisfy a request.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from .specs import (
    Decision,
    GpuState,
    Holder,
    Launch,
    NodeCpus,
    Placement,
    Preempt,
    Settings,
    Snapshot,
    TaskSpec,
    Wait,
)

__all__ = ["DRAINING_REASON", "decide", "infeasible"]

DRAINING_REASON = "dlnest-ray is going down (`dlnest-ray down`): it starts after the next `up`"
MAX_PREEMPT_TRIES = 2000  # victim sets tried per node and task: bounds a pass on a crowded node


@dataclass(frozen=True)
class _Victim:
    """A running task that could be preempted: where it holds memory (GPU positions) and how much."""

    task_id: str
    node: str
    positions: tuple[int, ...]
    mb: int
    cpus: float
    started_at: float


def _cpus(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def _need(task: TaskSpec, total_mb: int, k: int, settings: Settings) -> int:
    """MB needed on one of ``k`` GPUs with ``total_mb``: an even share, or 90% of the GPU by default."""
    if task.memory_mb is None:
        return int(total_mb * settings.memory_fraction)
    return -(-task.memory_mb // k)


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
            if k <= len(totals) and all(_need(task, t, k, settings) <= t for t in totals[:k]):
                return None
    if task.placement.spreads:
        k = task.gpus or most
        return f"needs {task.memory_mb} MB over {k} GPU(s) of one node, more than the GPUs of any node hold"
    return (
        f"needs {task.memory_mb} MB on one GPU but the largest GPU has {largest} MB; "
        "use --multi-gpu or --ddp to spread it over several GPUs"
    )


class _Pool:
    """Mutable view of the GPUs during one pass: launches decided so far take memory and slots."""

    def __init__(self, gpus: Sequence[GpuState], settings: Settings, cpus: Sequence[NodeCpus] = ()) -> None:
        self.gpus = list(gpus)
        self.settings = settings
        self.cpus = {c.node: c.free for c in cpus}  # a node not here is not limited by CPUs
        self.usable = [g.usable_mb for g in gpus]
        self.tasks = [g.tasks for g in gpus]
        self.held_for: dict[int, str] = {}  # GPU position → the starving task it is reserved for
        self.launched: dict[int, list[Holder]] = {}  # GPU position → launches of this pass on it
        self.by_node: dict[str, list[int]] = {}
        for i, g in enumerate(gpus):
            self.by_node.setdefault(g.node, []).append(i)
        self.is_open = [self._compute_open(i) for i in range(len(self.gpus))]
        self.stopping = self._stopping()  # preemptor → node → its victims still stopping
        self.lowest_priority = min((h.priority for g in gpus for h in g.holders), default=None)
        self.version = 0
        self._tops_version = -1
        self._tops: list[list[int]] = []
        self._summary_version = -1
        self._summary_value: tuple[str | None, int, str, int] = (None, -1, "", 0)
        self._left_key = (-1, -1)
        self._left_value: str | None = None

    def _compute_open(self, i: int) -> bool:
        g = self.gpus[i]
        return g.enabled and self.tasks[i] < self.settings.max_tasks_per_device and i not in self.held_for

    def open(self, i: int) -> bool:
        return self.is_open[i]

    def cpus_fit(self, node: str, need: float) -> bool:
        return node not in self.cpus or self.cpus[node] >= need - 1e-9

    def take_cpus(self, node: str | None, need: float) -> None:
        if node is not None and node in self.cpus:
            self.cpus[node] -= need
            self.version += 1

    def take(self, positions: Sequence[int], mb: int, task_id: str) -> None:
        for i in positions:
            self.launched.setdefault(i, []).append(Holder(task_id=task_id, mb=mb))
            self.usable[i] -= mb
            self.tasks[i] += 1
            self.is_open[i] = self._compute_open(i)
        self.version += 1

    def cpu_node(self, need: float) -> tuple[str | None, bool]:
        """Where a CPU task goes: (the node with the most free CPUs, whether they cover ``need``);
        (None, True) when no node's CPUs are known (Ray picks)."""
        if not self.cpus:
            return None, True
        node = max(sorted(self.cpus), key=lambda n: self.cpus[n])
        return node, self.cpus[node] >= need - 1e-9

    def hold(self, positions: Sequence[int], task_id: str) -> None:
        for i in positions:
            self.held_for.setdefault(i, task_id)
            self.is_open[i] = False
        self.version += 1

    def may_fit(self, need: int, k: int) -> bool:
        """Cheap necessary condition: some node has k open GPUs with at least ``need`` MB usable."""
        if self._tops_version != self.version:
            self._tops = [
                sorted((self.usable[i] for i in pos if self.is_open[i]), reverse=True)
                for pos in self.by_node.values()
            ]
            self._tops_version = self.version
        return any(len(top) >= k and top[k - 1] >= need for top in self._tops)

    def fit(
        self,
        task: TaskSpec,
        k: int,
        *,
        ignore_load: bool = False,
        ignore_cpus: bool = False,
        only_node: str | None = None,
    ) -> tuple[str, list[int], int] | None:
        """Best-fit k distinct GPUs of one node for ``task``: (node, positions, MB each), or None. A node
        without the CPUs for the task's ranks is skipped, unless ``ignore_cpus`` or ``ignore_load``."""
        best: tuple[int, str, list[int], int] | None = None
        for node, positions in self.by_node.items():
            if only_node is not None and node != only_node:
                continue
            if not (ignore_load or ignore_cpus or self.cpus_fit(node, task.cpus_on(k))):
                continue
            cands: list[tuple[int, int, int]] = []
            for i in positions:
                g = self.gpus[i]
                if ignore_load:
                    if not g.enabled:
                        continue
                    need = _need(task, g.total_mb, k, self.settings)
                    if need <= g.total_mb:
                        cands.append((-self.usable[i], g.index, i))  # most free first: fits soonest
                    continue
                if not self.is_open[i]:
                    continue
                need = _need(task, g.total_mb, k, self.settings)
                if self.usable[i] >= need:
                    cands.append((self.usable[i] - need, g.index, i))
            if len(cands) < k:
                continue
            cands.sort()
            chosen = cands[:k]
            score = sum(c[0] for c in chosen)
            if best is None or (score, node) < (best[0], best[1]):
                mb = max(_need(task, self.gpus[c[2]].total_mb, k, self.settings) for c in chosen)
                best = (score, node, [c[2] for c in chosen], mb)
        return None if best is None else (best[1], best[2], best[3])

    def counts(self, task: TaskSpec) -> Sequence[int]:
        if task.gpus is not None:
            return [task.gpus]
        if not task.placement.spreads:
            return [1]
        return range(1, max((len(v) for v in self.by_node.values()), default=0) + 1)

    def place(self, task: TaskSpec, *, ignore_cpus: bool = False) -> tuple[str, list[int], int] | None:
        for k in self.counts(task):
            if task.memory_mb is not None and not self.may_fit(-(-task.memory_mb // k), k):
                continue
            found = self.fit(task, k, ignore_cpus=ignore_cpus)
            if found is not None:
                return found
        return None

    def place_without(self, task: TaskSpec, victims: Sequence[_Victim], node: str) -> list[int] | None:
        """Where ``task`` would go on ``node`` were ``victims`` (all on ``node``) gone: GPU positions, or
        None. The pool is left as it was."""
        saved = (list(self.usable), list(self.tasks), list(self.is_open), dict(self.cpus))
        for v in victims:
            for i in v.positions:
                self.usable[i] += v.mb
                self.tasks[i] -= 1
            if node in self.cpus:
                self.cpus[node] += v.cpus
        for i in self.by_node[node]:
            self.is_open[i] = self._compute_open(i)
        self.version += 1
        try:
            for k in self.counts(task):
                found = self.fit(task, k, only_node=node)
                if found is not None:
                    return found[1]
            return None
        finally:
            self.usable, self.tasks, self.is_open, self.cpus = saved[0], saved[1], saved[2], saved[3]
            self.version += 1

    def victims_on(self, node: str, below: int, taken: set[str]) -> list[_Victim]:
        """Running tasks on ``node`` that may be preempted for a task of priority ``below`` (strictly
        lower priority, preemptible, not already stopping or chosen in this pass), most recent first."""
        found: dict[str, tuple[Holder, list[int]]] = {}
        for i in self.by_node[node]:
            for h in self.gpus[i].holders:
                if h.preemptible and h.priority < below and not h.stopping_for and h.task_id not in taken:
                    found.setdefault(h.task_id, (h, []))[1].append(i)
        out = [_Victim(h.task_id, node, tuple(pos), h.mb, h.cpus, h.started_at) for h, pos in found.values()]
        out.sort(key=lambda v: (-v.started_at, v.task_id))
        return out

    def _stopping(self) -> dict[str, dict[str, list[_Victim]]]:
        """Tasks already preempted and still stopping: per task they were preempted for, per node."""
        found: dict[tuple[str, str, str], tuple[Holder, list[int]]] = {}
        for i, g in enumerate(self.gpus):
            for h in g.holders:
                if h.stopping_for:
                    found.setdefault((h.stopping_for, g.node, h.task_id), (h, []))[1].append(i)
        out: dict[str, dict[str, list[_Victim]]] = {}
        for (by, node, _), (h, pos) in found.items():
            victim = _Victim(h.task_id, node, tuple(pos), h.mb, h.cpus, h.started_at)
            out.setdefault(by, {}).setdefault(node, []).append(victim)
        return out

    def explain_cpus(self, task: TaskSpec) -> str | None:
        """When GPU memory alone would fit but the node's CPUs do not: that reason, else None."""
        found = self.place(task, ignore_cpus=True)
        if found is None:
            return None
        node, positions, _ = found
        labels = ",".join(f"gpu{self.gpus[i].index}" for i in positions)
        need = task.cpus_on(len(positions))
        free = max(0.0, self.cpus.get(node, 0.0))
        return f"needs {_cpus(need)} on the node of {node}:{labels}; {free:g} free"

    def _summary(self) -> tuple[str | None, int, str, int]:
        """Task-independent part of a wait reason, cached per version:
        (reason when no GPU is open at all, best open GPU, node with most open GPUs, their count)."""
        if self._summary_version == self.version:
            return self._summary_value
        open_gpus = [i for i in range(len(self.gpus)) if self.is_open[i]]
        blocked: str | None = None
        best, node, count = -1, "", 0
        if not any(g.enabled for g in self.gpus):
            blocked = "no GPU is enabled (see `dlnest-ray config --devices`)"
        elif not open_gpus:
            enabled = [i for i, g in enumerate(self.gpus) if g.enabled]
            limit = self.settings.max_tasks_per_device
            if all(self.tasks[i] >= limit for i in enabled):
                blocked = f"every enabled GPU already runs {limit} task(s) (max per device)"
            else:
                holders = sorted({self.held_for[i] for i in enabled if i in self.held_for})
                blocked = f"the free GPUs are reserved for {', '.join(holders)}, which waited longest"
        else:
            best = max(open_gpus, key=lambda i: (self.usable[i], -i))
            counts = {n: sum(1 for i in pos if self.is_open[i]) for n, pos in self.by_node.items()}
            node = max(counts, key=lambda n: counts[n])
            count = counts[node]
        self._summary_value = (blocked, best, node, count)
        self._summary_version = self.version
        return self._summary_value

    def left(self, i: int) -> str | None:
        """What holds GPU ``i``: ``a:gpu0 has 4200 MB left after T_0003 (9000) and T_0005 (2800)``,
        the running tasks and this pass's launches largest first (at most 3, then "and N more"), and
        ``; other programs use N MB`` when NVML's free memory is the tighter bound. None when no
        dlnest-ray task holds the GPU."""
        if self._left_key == (self.version, i):
            return self._left_value
        self._left_key, self._left_value = (self.version, i), self._compute_left(i)
        return self._left_value

    def _compute_left(self, i: int) -> str | None:
        g = self.gpus[i]
        holders = [*g.holders, *self.launched.get(i, ())]
        if not holders:
            return None
        holders.sort(key=lambda h: (-h.mb, h.task_id))
        names = [f"{h.task_id} ({h.mb})" for h in holders[:3]]
        if len(holders) > 3:
            names.append(f"{len(holders) - 3} more")
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        text = f"{g.label} has {max(self.usable[i], 0)} MB left after {listed}"
        held = g.held_mb
        others = g.total_mb - g.free_mb - held
        if g.free_mb - g.recent_mb < g.total_mb - held and others > 0:
            text += f"; other programs use {others} MB"
        return text

    def explain(self, task: TaskSpec) -> str:
        blocked, best, node, count = self._summary()
        if blocked is not None:
            return blocked
        g = self.gpus[best]
        free = max(self.usable[best], 0)
        left = self.left(best)
        if task.gpus is None and not task.placement.spreads:
            need = _need(task, g.total_mb, 1, self.settings)
            if left is not None:
                return f"needs {need} MB on 1 GPU; {left}"
            return f"needs {need} MB on 1 GPU; best free is {free} MB on {g.label}"
        k = task.gpus or max(len(v) for v in self.by_node.values())
        need = _need(task, g.total_mb, k, self.settings)
        what = f"{task.gpus} GPUs" if task.gpus else f"up to {k} GPUs"
        if left is not None:
            return f"needs {what} of one node with {need} MB each; {count} open GPU(s) on {node}; {left}"
        return (
            f"needs {what} of one node with {need} MB each; best free is {free} MB on "
            f"{g.label} ({count} open GPU(s) on {node})"
        )


def _names(ids: Sequence[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]}"


def _preemption(pool: _Pool, task: TaskSpec, taken: set[str]) -> tuple[str, list[_Victim], list[int]] | None:
    """The fewest strictly lower-priority running tasks of one node whose stop would let ``task`` fit
    (then the most recently started): (node, victims, the GPU positions ``task`` would take), or None."""
    best: tuple[tuple[int, tuple[float, ...], str], str, list[_Victim], list[int]] | None = None
    for node in sorted(pool.by_node):
        cands = pool.victims_on(node, task.priority, taken)
        if not cands or pool.place_without(task, cands, node) is None:
            continue  # not even all of them would make room here
        tries = 0
        for size in range(1, len(cands) + 1):
            if best is not None and size > best[0][0]:
                break
            hit = None
            for combo in itertools.combinations(cands, size):  # most recently started come first
                tries += 1
                if tries > MAX_PREEMPT_TRIES:
                    combo = tuple(cands)  # too many to try: all of them (they are known to make room)
                positions = pool.place_without(task, combo, node)
                if positions is not None:
                    hit = (list(combo), positions)
                    break
                if tries > MAX_PREEMPT_TRIES:
                    break
            if hit is not None:
                key = (len(hit[0]), tuple(-v.started_at for v in hit[0]), node)
                if best is None or key < best[0]:
                    best = (key, node, hit[0], hit[1])
                break
    return None if best is None else (best[1], best[2], best[3])


def decide(pending: Sequence[TaskSpec], snapshot: Snapshot) -> list[Decision]:
    """One decision per pending task, highest priority first (submit order within a priority);
    launches and preemptions within the pass see each other."""
    if snapshot.draining:
        return [Wait(task_id=t.task_id, reason=DRAINING_REASON) for t in pending]
    pool = _Pool(snapshot.gpus, snapshot.settings, snapshot.cpus)
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
                why = f"needs {_cpus(need)} on one node; the most free is {free:g} (on {node})"
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
            chosen = _preemption(pool, task, taken)
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
