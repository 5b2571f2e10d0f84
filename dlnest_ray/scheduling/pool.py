"""The policy's mutable view of the GPUs and CPUs during one scheduling pass (pure: no Ray, no clock).

:class:`Pool` starts from a :class:`~.specs.Snapshot`'s GPUs, settings and CPUs; each launch decided in
the pass takes memory, slots and CPUs from it, each preemption holds what its victims free. It places
tasks (best fit), explains why one does not fit, and lists a node's preemptible victims
(:class:`Victim`). The rules are :mod:`.policy`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .specs import GpuState, Holder, NodeCpus, Settings, TaskSpec

__all__ = ["Pool", "Victim", "cpus_text", "need_mb"]


@dataclass(frozen=True)
class Victim:
    """A running task that could be preempted: where it holds memory (GPU positions) and how much."""

    task_id: str
    node: str
    positions: tuple[int, ...]
    mb: int
    cpus: float
    started_at: float


def cpus_text(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def need_mb(task: TaskSpec, total_mb: int, k: int, settings: Settings) -> int:
    """MB needed on one of ``k`` GPUs with ``total_mb``: an even share, or 90% of the GPU by default."""
    if task.memory_mb is None:
        return int(total_mb * settings.memory_fraction)
    return -(-task.memory_mb // k)


class Pool:
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
                    need = need_mb(task, g.total_mb, k, self.settings)
                    if need <= g.total_mb:
                        cands.append((-self.usable[i], g.index, i))  # most free first: fits soonest
                    continue
                if not self.is_open[i]:
                    continue
                need = need_mb(task, g.total_mb, k, self.settings)
                if self.usable[i] >= need:
                    cands.append((self.usable[i] - need, g.index, i))
            if len(cands) < k:
                continue
            cands.sort()
            chosen = cands[:k]
            score = sum(c[0] for c in chosen)
            if best is None or (score, node) < (best[0], best[1]):
                mb = max(need_mb(task, self.gpus[c[2]].total_mb, k, self.settings) for c in chosen)
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

    def place_without(self, task: TaskSpec, victims: Sequence[Victim], node: str) -> list[int] | None:
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

    def victims_on(self, node: str, below: int, taken: set[str]) -> list[Victim]:
        """Running tasks on ``node`` that may be preempted for a task of priority ``below`` (strictly
        lower priority, preemptible, not already stopping or chosen in this pass), most recent first."""
        found: dict[str, tuple[Holder, list[int]]] = {}
        for i in self.by_node[node]:
            for h in self.gpus[i].holders:
                if h.preemptible and h.priority < below and not h.stopping_for and h.task_id not in taken:
                    found.setdefault(h.task_id, (h, []))[1].append(i)
        out = [Victim(h.task_id, node, tuple(pos), h.mb, h.cpus, h.started_at) for h, pos in found.values()]
        out.sort(key=lambda v: (-v.started_at, v.task_id))
        return out

    def _stopping(self) -> dict[str, dict[str, list[Victim]]]:
        """Tasks already preempted and still stopping: per task they were preempted for, per node."""
        found: dict[tuple[str, str, str], tuple[Holder, list[int]]] = {}
        for i, g in enumerate(self.gpus):
            for h in g.holders:
                if h.stopping_for:
                    found.setdefault((h.stopping_for, g.node, h.task_id), (h, []))[1].append(i)
        out: dict[str, dict[str, list[Victim]]] = {}
        for (by, node, _), (h, pos) in found.items():
            victim = Victim(h.task_id, node, tuple(pos), h.mb, h.cpus, h.started_at)
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
        return f"needs {cpus_text(need)} on the node of {node}:{labels}; {free:g} free"

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
            need = need_mb(task, g.total_mb, 1, self.settings)
            if left is not None:
                return f"needs {need} MB on 1 GPU; {left}"
            return f"needs {need} MB on 1 GPU; best free is {free} MB on {g.label}"
        k = task.gpus or max(len(v) for v in self.by_node.values())
        need = need_mb(task, g.total_mb, k, self.settings)
        what = f"{task.gpus} GPUs" if task.gpus else f"up to {k} GPUs"
        if left is not None:
            return f"needs {what} of one node with {need} MB each; {count} open GPU(s) on {node}; {left}"
        return (
            f"needs {what} of one node with {need} MB each; best free is {free} MB on "
            f"{g.label} ({count} open GPU(s) on {node})"
        )
