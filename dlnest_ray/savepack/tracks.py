"""Checkpoint retention tracks, exactly DLNest's rules (pure: ids in, ids out).

After saving checkpoint ``k``:

1. fast: append ``k``; beyond ``fast`` entries, the oldest is evicted;
2. slow: if ``k % dilation == 0``, append; beyond ``slow`` entries, the oldest is evicted;
3. consistent: if the save is held, append; beyond ``consistent`` entries, the oldest is evicted;
4. an evicted id is deleted only when no track still holds it.

dlnest-ray adds one rule for preemption: a checkpoint saved with ``pin`` (the one a preempted run takes
at the epoch it stops after) is *pinned*: kept whatever the tracks evict until the next checkpoint is
saved — by then the run has resumed past it — when it is released like any evicted id.

A limit of 0 admits and immediately evicts. Ids count saves from 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

__all__ = ["Admission", "TrackLimits", "TrackState", "admit", "truncate"]


@dataclass(frozen=True, kw_only=True)
class TrackLimits:
    fast: int
    slow: int
    dilation: int
    consistent: int

    def __post_init__(self) -> None:
        if min(self.fast, self.slow, self.consistent) < 0 or self.dilation < 1:
            raise ValueError(f"invalid track limits: {self}")


@dataclass(frozen=True, kw_only=True)
class TrackState:
    fast: tuple[int, ...] = ()
    slow: tuple[int, ...] = ()
    consistent: tuple[int, ...] = ()
    next_id: int = 0
    pinned: tuple[int, ...] = ()

    def held(self) -> frozenset[int]:
        """Every id some track keeps, or that is pinned: exactly the checkpoints that must exist on disk."""
        return frozenset((*self.fast, *self.slow, *self.consistent, *self.pinned))


@dataclass(frozen=True, kw_only=True)
class Admission:
    state: TrackState
    ckpt_id: int
    delete: tuple[int, ...]
    """Ids that no track holds any more (possibly including ``ckpt_id`` itself), ascending."""


def _push(track: tuple[int, ...], ckpt_id: int, limit: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    grown = (*track, ckpt_id)
    cut = max(0, len(grown) - limit)
    return grown[cut:], grown[:cut]


def admit(state: TrackState, limits: TrackLimits, *, hold: bool, pin: bool = False) -> Admission:
    """Admit the next checkpoint id into the tracks and say which ids to delete. Earlier pins are
    released; with ``pin`` the new id is pinned."""
    k = state.next_id
    fast, out_fast = _push(state.fast, k, limits.fast)
    slow, out_slow = (state.slow, ()) if k % limits.dilation else _push(state.slow, k, limits.slow)
    cons, out_cons = _push(state.consistent, k, limits.consistent) if hold else (state.consistent, ())
    new = TrackState(fast=fast, slow=slow, consistent=cons, next_id=k + 1, pinned=(k,) if pin else ())
    kept = new.held()
    delete = sorted({i for i in (*out_fast, *out_slow, *out_cons, *state.pinned) if i not in kept})
    return Admission(state=new, ckpt_id=k, delete=tuple(delete))


def truncate(state: TrackState, next_id: int) -> tuple[TrackState, tuple[int, ...]]:
    """Forget ids >= ``next_id`` (resume from an older checkpoint); return the new state, dropped ids."""
    if next_id < 0:
        raise ValueError("next_id must be >= 0")

    def keep(ids: Iterable[int]) -> tuple[int, ...]:
        return tuple(i for i in ids if i < next_id)

    dropped = sorted(i for i in state.held() if i >= next_id)
    new = replace(
        state,
        fast=keep(state.fast),
        slow=keep(state.slow),
        consistent=keep(state.consistent),
        pinned=keep(state.pinned),
        next_id=min(state.next_id, next_id),
    )
    return new, tuple(dropped)
