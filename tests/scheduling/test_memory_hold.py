"""Rule 2 of the policy alone: a running dlnest-ray task holds max(reservation, peak) on its GPUs for its
whole run, whatever NVML says it uses now; NVML free (less recent launches) still bounds what is usable,
so other programs count. Table tests, wait reasons that name the holders, and a property: a pass never
over-commits a card."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlnest_ray.scheduling.policy import decide
from dlnest_ray.scheduling.specs import GpuState, Holder, Launch, Placement, Snapshot, TaskSpec, Wait

P = Placement
TOTAL = 16000


def gpu(
    node: str = "a",
    index: int = 0,
    *,
    free: int = TOTAL,
    held: dict[str, int] | None = None,
    recent: int = 0,
    total: int = TOTAL,
) -> GpuState:
    holders = tuple(Holder(task_id=t, mb=mb) for t, mb in (held or {}).items())
    return GpuState(
        node=node,
        index=index,
        total_mb=total,
        free_mb=free,
        recent_mb=recent,
        holders=holders,
        tasks=len(holders),
    )


def task(tid: str, mb: int | None = None, placement: Placement = P.GPU, k: int | None = None) -> TaskSpec:
    return TaskSpec(task_id=tid, placement=placement, memory_mb=mb, gpus=k)


def run(tasks: list[TaskSpec], *devs: GpuState) -> dict[str, Launch | Wait]:
    return {d.task_id: d for d in decide(tasks, Snapshot(gpus=devs))}


def where(d: Launch | Wait) -> tuple[str | None, tuple[int, ...]] | str:
    return (d.node, d.gpus) if isinstance(d, Launch) else "wait"


# ------------------------------------------------------------------------------------------ usable_mb
@pytest.mark.parametrize(
    ("state", "usable"),
    [
        (gpu(free=16000), 16000),  # nothing runs
        (gpu(free=15000, held={"T_1": 9000}), 7000),  # the holder uses 1000 now but holds 9000
        (gpu(free=5000, held={"T_1": 2000}), 5000),  # other programs use 9000: NVML is tighter
        (gpu(free=16000, recent=10000), 6000),  # launched moments ago, not allocated yet
        (gpu(free=14000, held={"T_1": 4000}, recent=4000), 10000),  # the same launch on both sides
        (gpu(free=16000, held={"T_1": 9000, "T_2": 9000}), -2000),  # over-committed: negative
    ],
)
def test_usable_is_the_smaller_of_nvml_and_total_less_holders(state: GpuState, usable: int) -> None:
    assert state.usable_mb == usable


# ------------------------------------------------------------------------------------------ placement
CASES = [
    # (name, tasks, gpus, expected {task: (node, gpus) | "wait"})
    (
        "nvml free is large but the holders leave too little",
        [task("T1", 8000)],
        [gpu(free=15000, held={"T_A": 9000})],
        {"T1": "wait"},
    ),
    (
        "what the holders leave is enough",
        [task("T1", 7000)],
        [gpu(free=15000, held={"T_A": 9000})],
        {"T1": ("a", (0,))},
    ),
    (
        "a holder's peak above nvml's current use still counts",
        [task("T1", 5000)],
        [gpu(free=14000, held={"T_A": 12000})],
        {"T1": "wait"},
    ),
    (
        "other programs: nvml free below total less holders is respected",
        [task("T1", 6000)],
        [gpu(free=5000, held={"T_A": 2000})],
        {"T1": "wait"},
    ),
    (
        "other programs: what nvml leaves is enough",
        [task("T1", 5000)],
        [gpu(free=5000, held={"T_A": 2000})],
        {"T1": ("a", (0,))},
    ),
    (
        "recent launches still count",
        [task("T1", 7000)],
        [gpu(free=16000, recent=10000)],
        {"T1": "wait"},
    ),
    (
        "best fit ranks gpus by what the holders leave, not by nvml free",
        [task("T1", 3000)],
        [gpu(index=0, free=6000), gpu(index=1, free=15000, held={"T_A": 12000})],
        {"T1": ("a", (1,))},
    ),
    (
        "launches of one pass add to the holders",
        [task("T1", 5000), task("T2", 5000)],
        [gpu(free=16000, held={"T_A": 7000})],
        {"T1": ("a", (0,)), "T2": "wait"},
    ),
    (
        "default memory (90%) waits for a gpu someone holds even when it looks empty",
        [task("T1")],
        [gpu(index=0, free=15800, held={"T_A": 4000}), gpu(index=1, free=16000)],
        {"T1": ("a", (1,))},
    ),
    (
        "multi spreads over the gpus the holders leave room on",
        [task("T1", 20000, P.MULTI)],
        [gpu(index=0, free=16000, held={"T_A": 10000}), gpu(index=1), gpu(index=2)],
        {"T1": ("a", (1, 2))},
    ),
    (
        "multi needs a third gpu when holders shrink two",
        [task("T1", 24000, P.MULTI)],
        [gpu(index=i, free=16000, held={f"T_{i}": 8000}) for i in range(3)],
        {"T1": ("a", (0, 1, 2))},
    ),
    (
        "ddp skips the node where one gpu is held",
        [task("T1", 16000, P.DDP, 2)],
        [gpu("a", 0, free=15000, held={"T_A": 14000}), gpu("a", 1), gpu("b", 0), gpu("b", 1)],
        {"T1": ("b", (0, 1))},
    ),
    (
        "ddp waits when every node has a held gpu",
        [task("T1", 16000, P.DDP, 2)],
        [gpu("a", 0, held={"T_A": 9000}), gpu("a", 1), gpu("b", 0), gpu("b", 1, held={"T_B": 9000})],
        {"T1": "wait"},
    ),
]


@pytest.mark.parametrize(("name", "tasks", "devs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_holders_table(
    name: str, tasks: list[TaskSpec], devs: list[GpuState], expected: dict[str, object]
) -> None:
    out = run(tasks, *devs)
    assert list(out) == [t.task_id for t in tasks]
    assert {tid: where(out[tid]) for tid in expected} == expected


# ------------------------------------------------------------------------------------------ wait reasons
def reason(tasks: list[TaskSpec], *devs: GpuState) -> str:
    d = run(tasks, *devs)[tasks[-1].task_id]
    assert isinstance(d, Wait), d
    return d.reason


def test_wait_reason_names_the_holders_largest_first() -> None:
    dev = gpu("node", free=14000, held={"T_0005": 2800, "T_0003": 9000})
    assert reason([task("T_0009", 6000)], dev) == (
        "needs 6000 MB on 1 GPU; node:gpu0 has 4200 MB left after T_0003 (9000) and T_0005 (2800)"
    )


def test_wait_reason_lists_three_holders_then_counts_the_rest() -> None:
    held = {"T_1": 1000, "T_2": 5000, "T_3": 2000, "T_4": 4000, "T_5": 3000}
    assert reason([task("T_9", 2000)], gpu(free=16000, held=held)) == (
        "needs 2000 MB on 1 GPU; a:gpu0 has 1000 MB left after T_2 (5000), T_4 (4000), T_5 (3000) and 2 more"
    )
    three = {"T_1": 5000, "T_2": 5000, "T_3": 5000}
    assert reason([task("T_9", 2000)], gpu(free=16000, held=three)) == (
        "needs 2000 MB on 1 GPU; a:gpu0 has 1000 MB left after T_1 (5000), T_2 (5000) and T_3 (5000)"
    )


def test_wait_reason_says_what_other_programs_use_when_nvml_is_tighter() -> None:
    dev = gpu(free=5000, held={"T_A": 2000})  # 16000 - 5000 - 2000 = 9000 MB of other programs
    assert reason([task("T1", 6000)], dev) == (
        "needs 6000 MB on 1 GPU; a:gpu0 has 5000 MB left after T_A (2000); other programs use 9000 MB"
    )
    holders_tighter = gpu(free=15000, held={"T_A": 9000})
    assert "other programs" not in reason([task("T1", 8000)], holders_tighter)


def test_wait_reason_names_the_best_gpu_and_this_passs_launches() -> None:
    devs = (gpu(index=0, free=16000, held={"T_A": 12000}), gpu(index=1, free=16000, held={"T_B": 6000}))
    out = run([task("T1", 5000), task("T2", 8000)], *devs)
    assert where(out["T1"]) == ("a", (1,))
    assert isinstance(out["T2"], Wait)
    assert out["T2"].reason == (
        "needs 8000 MB on 1 GPU; a:gpu1 has 5000 MB left after T_B (6000) and T1 (5000)"
    )


def test_wait_reason_for_spread_tasks_names_the_holders() -> None:
    devs = (gpu("a", 0, held={"T_A": 9000}), gpu("a", 1, held={"T_B": 10000}))
    assert reason([task("T1", 16000, P.DDP, 2)], *devs) == (
        "needs 2 GPUs of one node with 8000 MB each; 2 open GPU(s) on a; "
        "a:gpu0 has 7000 MB left after T_A (9000)"
    )


def test_wait_reason_without_holders_is_unchanged() -> None:
    assert (
        reason([task("T1", 6000)], gpu(free=4200)) == "needs 6000 MB on 1 GPU; best free is 4200 MB on a:gpu0"
    )


# ------------------------------------------------------------------------------------------ property
holder_sizes = st.lists(st.integers(1, 12000), max_size=4)


@st.composite
def cards(draw: st.DrawFn) -> list[GpuState]:
    out = []
    for n, node in enumerate(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))):
        for i in range(node):
            total = draw(st.sampled_from([8000, 16000, 24000]))
            held = {f"R{n}{i}_{j}": mb for j, mb in enumerate(draw(holder_sizes))}
            # NVML free is anything: holders may use far less than they hold, other programs may use more
            free = draw(st.integers(0, total))
            recent = draw(st.sampled_from([0, 0, 1000, 6000]))
            out.append(gpu(f"n{n}", i, free=free, held=held, recent=recent, total=total))
    return out


@settings(max_examples=300, deadline=None)
@given(
    devs=cards(),
    reqs=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(1, 30000)),
            st.sampled_from([P.GPU, P.MULTI, P.DDP]),
            st.sampled_from([None, 1, 2, 3]),
        ),
        max_size=12,
    ),
)
def test_a_pass_never_over_commits_a_card(
    devs: list[GpuState], reqs: list[tuple[int | None, Placement, int | None]]
) -> None:
    tasks = [task(f"T{i}", mb, pl, k if pl is not P.GPU else None) for i, (mb, pl, k) in enumerate(reqs)]
    out = decide(tasks, Snapshot(gpus=tuple(devs)))
    held = {(g.node, g.index): list(g.holders) for g in devs}
    for d in out:
        if isinstance(d, Launch):
            for i in d.gpus:
                held[(d.node or "", i)].append(Holder(task_id=d.task_id, mb=d.mb_per_gpu))
    for g in devs:
        if g.held_mb <= g.total_mb:
            assert sum(h.mb for h in held[(g.node, g.index)]) <= g.total_mb, g
