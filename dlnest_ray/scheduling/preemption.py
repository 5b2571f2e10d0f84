"""Preemption (issue 14, pure): which strictly lower-priority running tasks to stop for a task that fits
nowhere — the fewest of one node whose stop lets it fit there, then the most recently started."""

from __future__ import annotations

import itertools

from .pool import Pool, Victim
from .specs import TaskSpec

__all__ = ["MAX_PREEMPT_TRIES", "preemption"]

MAX_PREEMPT_TRIES = 2000  # victim sets tried per node and task: bounds a pass on a crowded node


def preemption(pool: Pool, task: TaskSpec, taken: set[str]) -> tuple[str, list[Victim], list[int]] | None:
    """The fewest strictly lower-priority running tasks of one node whose stop would let ``task`` fit
    (then the most recently started): (node, victims, the GPU positions ``task`` would take), or None."""
    best: tuple[tuple[int, tuple[float, ...], str], str, list[Victim], list[int]] | None = None
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
