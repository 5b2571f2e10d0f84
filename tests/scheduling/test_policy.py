"""The scheduling policy alone, table-driven: fit, best fit, multi-GPU, DDP, CPU bypass, backfill,
starvation bound, disabled devices, cooldown reservations, max tasks per device, impossible requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlnest_ray.scheduling.policy import decide, infeasible
from dlnest_ray.scheduling.specs import GpuState, Launch, Placement, Settings, Snapshot, TaskSpec, Wait

P = Placement


def gpus(node: str = "a", *free: int, total: int = 16000, **kw: int) -> tuple[GpuState, ...]:
    return tuple(GpuState(node=node, index=i, total_mb=total, free_mb=f, **kw) for i, f in enumerate(free))


def task(
    tid: str, mb: int | None = None, placement: Placement = P.GPU, k: int | None = None, t: float = 0.0
) -> TaskSpec:
    return TaskSpec(task_id=tid, placement=placement, memory_mb=mb, gpus=k, submitted_at=t)


def run(
    tasks: list[TaskSpec], devs: tuple[GpuState, ...], now: float = 0.0, **settings_kw: float
) -> dict[str, object]:
    snap = Snapshot(gpus=devs, settings=Settings(**settings_kw), now=now)  # type: ignore[arg-type]
    return {d.task_id: d for d in decide(tasks, snap)}


def placed(d: object) -> tuple[str | None, tuple[int, ...]]:
    assert isinstance(d, Launch), d
    return d.node, d.gpus


CASES = [
    # (name, tasks, gpus, expected {task: (node, gpus) | "wait"})
    ("fits on the only gpu", [task("T1", 6000)], gpus("a", 16000), {"T1": ("a", (0,))}),
    (
        "best fit picks the tightest gpu",
        [task("T1", 6000)],
        gpus("a", 16000, 7000, 9000),
        {"T1": ("a", (1,))},
    ),
    (
        "two small runs share one gpu",
        [task("T1", 6000), task("T2", 6000)],
        gpus("a", 16000),
        {"T1": ("a", (0,)), "T2": ("a", (0,))},
    ),
    (
        "third run waits",
        [task("T1", 6000), task("T2", 6000), task("T3", 6000)],
        gpus("a", 16000),
        {"T3": "wait"},
    ),
    (
        "default memory is 90% of a gpu",
        [task("T1"), task("T2")],
        gpus("a", 16000, 16000),
        {"T1": ("a", (0,)), "T2": ("a", (1,))},
    ),
    ("default memory waits on a used gpu", [task("T1")], gpus("a", 14000), {"T1": "wait"}),
    (
        "backfill: a big task does not block a small one",
        [task("T1", 15000), task("T2", 2000)],
        gpus("a", 8000),
        {"T1": "wait", "T2": ("a", (0,))},
    ),
    (
        "cpu tasks never wait",
        [task("T1", 15000), task("C1", placement=P.CPU)],
        gpus("a", 100),
        {"T1": "wait", "C1": (None, ())},
    ),
    (
        "multi-gpu spreads when one gpu is too small",
        [task("T1", 20000, P.MULTI)],
        gpus("a", 12000, 12000, 3000),
        {"T1": ("a", (0, 1))},
    ),
    (
        "multi-gpu uses one gpu when it fits",
        [task("T1", 9000, P.MULTI)],
        gpus("a", 12000, 12000),
        {"T1": ("a", (0,))},
    ),
    (
        "ddp gpus=2 takes two distinct gpus",
        [task("T1", 4000, P.DDP, 2)],
        gpus("a", 16000, 16000),
        {"T1": ("a", (0, 1))},
    ),
    ("ddp never puts two ranks on one gpu", [task("T1", 2000, P.DDP, 2)], gpus("a", 16000), {"T1": "wait"}),
    (
        "ddp ranks stay on one node",
        [task("T1", 4000, P.DDP, 2)],
        gpus("a", 16000) + gpus("b", 16000),
        {"T1": "wait"},
    ),
    (
        "multi picks the node with fewest gpus needed",
        [task("T1", 24000, P.MULTI)],
        gpus("a", 9000, 9000, 9000) + gpus("b", 12000, 12000),
        {"T1": ("b", (0, 1))},
    ),
    (
        "disabled gpus are never chosen",
        [task("T1", 1000)],
        gpus("a", 16000, enabled=False) + gpus("b", 2000),
        {"T1": ("b", (0,))},
    ),
    (
        "recent launches reserve memory (cooldown)",
        [task("T1", 6000)],
        gpus("a", 16000, recent_mb=12000),
        {"T1": "wait"},
    ),
    (
        "max tasks per device",
        [task("T1", 100), task("T2", 100)],
        gpus("a", 16000),
        {"T1": ("a", (0,)), "T2": "wait"},
    ),
]


@pytest.mark.parametrize(("name", "tasks", "devs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_policy_table(
    name: str, tasks: list[TaskSpec], devs: tuple[GpuState, ...], expected: dict[str, object]
) -> None:
    kw = {"max_tasks_per_device": 1} if name == "max tasks per device" else {}
    out = run(tasks, devs, **kw)
    assert [d for d in out] == [t.task_id for t in tasks]  # one decision per task, in order
    for tid, want in expected.items():
        if want == "wait":
            assert isinstance(out[tid], Wait), out[tid]
            assert out[tid].reason  # type: ignore[union-attr]
        else:
            assert placed(out[tid]) == want


def test_wait_reason_names_need_and_best_free() -> None:
    out = run([task("T1", 6000)], gpus("node-a", 4200, 1000))
    assert out["T1"] == Wait(
        task_id="T1", reason="needs 6000 MB on 1 GPU; best free is 4200 MB on node-a:gpu0"
    )


def test_wait_reason_for_full_devices_and_disabled() -> None:
    full = run([task("T1", 10)], gpus("a", 16000, tasks=2), max_tasks_per_device=2)["T1"]
    assert isinstance(full, Wait) and "max per device" in full.reason
    off = run([task("T1", 10)], gpus("a", 16000, enabled=False))["T1"]
    assert isinstance(off, Wait) and "enabled" in off.reason


def test_starvation_bound_holds_the_gpu_for_the_old_task() -> None:
    tasks = [task("OLD", 12000, t=0.0), task("NEW", 4000, t=990.0)]
    young = run(tasks, gpus("a", 8000), now=1000.0, starvation_s=3600)
    assert isinstance(young["OLD"], Wait) and placed(young["NEW"]) == ("a", (0,))  # backfill while young
    starved = run(tasks, gpus("a", 8000), now=4000.0, starvation_s=3600)
    assert isinstance(starved["OLD"], Wait) and starved["OLD"].reserving == ("a:gpu0",)
    assert isinstance(starved["NEW"], Wait) and "OLD" in starved["NEW"].reason


def test_starving_task_only_holds_gpus_it_could_use() -> None:
    tasks = [task("OLD", 12000, t=0.0), task("NEW", 4000, t=0.0)]
    devs = gpus("a", 8000, total=16000) + gpus("b", 4000, total=8000)  # OLD can never use b's 8 GB GPU
    out = run(tasks, devs, now=10_000.0, starvation_s=60)
    assert isinstance(out["OLD"], Wait) and out["OLD"].reserving == ("a:gpu0",)
    assert placed(out["NEW"]) == ("b", (0,))


def test_launches_in_one_pass_see_each_other() -> None:
    out = run([task(f"T{i}", 5000) for i in range(6)], gpus("a", 16000, 10000))
    per_gpu: dict[int, int] = {}
    for d in out.values():
        if isinstance(d, Launch):
            per_gpu[d.gpus[0]] = per_gpu.get(d.gpus[0], 0) + d.mb_per_gpu
    assert per_gpu == {0: 15000, 1: 10000}  # three and two runs: full, never over
    assert [tid for tid, d in out.items() if isinstance(d, Wait)] == ["T5"]


@pytest.mark.parametrize(
    ("spec", "devs", "fragment"),
    [
        (task("T", 20000), gpus("a", 16000, 16000), "largest GPU has 16000 MB"),
        (task("T", 2000, P.DDP, 3), gpus("a", 16000, 16000) + gpus("b", 16000), "no node has more than 2"),
        (task("T", 40000, P.MULTI), gpus("a", 16000, 16000), "more than the GPUs of any node hold"),
        (task("T", 1000), (), "--cpu"),
    ],
)
def test_impossible_requests_are_rejected_with_a_reason(
    spec: TaskSpec, devs: tuple[GpuState, ...], fragment: str
) -> None:
    reason = infeasible(spec, devs)
    assert reason is not None and fragment in reason


def test_possible_requests_are_not_rejected_even_when_busy() -> None:
    busy = gpus("a", 0, 0, total=16000)
    assert infeasible(task("T", 16000), busy) is None
    assert infeasible(task("T", 30000, P.MULTI), busy) is None
    assert infeasible(task("T", placement=P.CPU), ()) is None


@settings(max_examples=200, deadline=None)
@given(
    frees=st.lists(st.integers(0, 16000), min_size=1, max_size=6),
    reqs=st.lists(
        st.tuples(
            st.integers(1, 20000), st.sampled_from([P.GPU, P.MULTI, P.DDP]), st.sampled_from([None, 1, 2, 3])
        ),
        max_size=12,
    ),
    max_tasks=st.integers(1, 4),
)
def test_decisions_never_oversubscribe(
    frees: list[int], reqs: list[tuple[int, Placement, int | None]], max_tasks: int
) -> None:
    devs = gpus("a", *frees[: len(frees) // 2 + 1]) + gpus("b", *frees[len(frees) // 2 + 1 :])
    tasks = [task(f"T{i}", mb, pl, k if pl is not P.GPU else None) for i, (mb, pl, k) in enumerate(reqs)]
    out = decide(tasks, Snapshot(gpus=devs, settings=Settings(max_tasks_per_device=max_tasks)))
    used: dict[tuple[str, int], int] = {}
    count: dict[tuple[str, int], int] = {}
    for d, t in zip(out, tasks, strict=True):
        assert d.task_id == t.task_id
        if isinstance(d, Launch):
            assert len(set(d.gpus)) == len(d.gpus)  # distinct GPUs per run
            if t.gpus is not None:
                assert len(d.gpus) == t.gpus
            assert d.mb_per_gpu * len(d.gpus) >= t.memory_mb  # type: ignore[operator]
            for g in d.gpus:
                used[(d.node, g)] = used.get((d.node, g), 0) + d.mb_per_gpu  # type: ignore[index]
                count[(d.node, g)] = count.get((d.node, g), 0) + 1  # type: ignore[index]
    free = {(g.node, g.index): g.free_mb for g in devs}
    assert all(used[k] <= free[k] for k in used)
    assert all(c <= max_tasks for c in count.values())


# ------------------------------------------------------------------------------------------ CPUs, drain
def cpu_run(
    tasks: list[TaskSpec], devs: tuple[GpuState, ...], cpus: dict[str, float], **kw: object
) -> dict[str, object]:
    from dlnest_ray.scheduling.specs import NodeCpus

    snap = Snapshot(gpus=devs, cpus=tuple(NodeCpus(node=n, free=f) for n, f in cpus.items()), **kw)  # type: ignore[arg-type]
    return {d.task_id: d for d in decide(tasks, snap)}


def test_a_run_waits_for_its_nodes_cpus_with_a_reason():
    out = cpu_run([task("T1", 6000), task("T2", 6000), task("T3", 3000)], gpus("a", 16000), {"a": 2})
    assert placed(out["T1"]) == ("a", (0,)) and placed(out["T2"]) == ("a", (0,))
    wait = out["T3"]
    assert isinstance(wait, Wait)  # the memory fits; the CPUs do not
    assert wait.reason == "needs 1 CPU on the node of a:gpu0; 0 free"


def test_ddp_ranks_each_need_cpus_and_a_node_with_them_is_chosen():
    devs = gpus("a", 16000, 16000) + gpus("b", 16000, 16000)
    ddp = TaskSpec(task_id="D", placement=P.DDP, memory_mb=8000, gpus=2, cpus_per_rank=1.5)
    out = cpu_run([ddp], devs, {"a": 2, "b": 3})
    assert placed(out["D"]) == ("b", (0, 1))
    out = cpu_run([ddp], devs, {"a": 2, "b": 2.5})
    assert isinstance(out["D"], Wait) and "needs 3 CPUs on the node of" in out["D"].reason


def test_cpu_tasks_go_to_the_node_with_most_free_cpus_and_wait_when_none_has_them():
    devs = gpus("a", 16000) + gpus("b", 16000)
    tasks = [task(f"C{i}", placement=P.CPU) for i in range(4)]
    out = cpu_run(tasks, devs, {"a": 1, "b": 2})
    assert [out[f"C{i}"].node for i in range(3)] == ["b", "a", "b"]  # type: ignore[union-attr]
    assert isinstance(out["C3"], Wait)
    assert out["C3"].reason == "needs 1 CPU on one node; the most free is 0 (on a)"


def test_unknown_cpus_limit_nothing():
    out = cpu_run([task("C", placement=P.CPU), task("T", 6000)], gpus("a", 16000), {})
    assert isinstance(out["C"], Launch) and out["C"].node is None
    assert placed(out["T"]) == ("a", (0,))


def test_draining_launches_nothing():
    from dlnest_ray.scheduling.policy import DRAINING_REASON

    out = cpu_run([task("T", 6000), task("C", placement=P.CPU)], gpus("a", 16000), {}, draining=True)
    assert all(isinstance(d, Wait) and d.reason == DRAINING_REASON for d in out.values())
