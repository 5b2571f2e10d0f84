"""Priorities and preemption in the scheduling policy alone (issue 14 item 2): the highest priority is
served first, a GPU task that fits nowhere preempts the fewest strictly lower-priority preemptible
holders of one node (then the most recently started), victims already stopping hold their GPUs for the
task they stop for, and CPU tasks never preempt."""

from __future__ import annotations

from dlnest_ray.scheduling.policy import decide
from dlnest_ray.scheduling.specs import (
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

P = Placement
FULL = 16000


def holder(
    tid: str,
    mb: int,
    prio: int = 0,
    *,
    preemptible: bool = True,
    started: float = 0.0,
    stopping_for: str = "",
    cpus: float = 0.0,
) -> Holder:
    return Holder(
        task_id=tid,
        mb=mb,
        priority=prio,
        preemptible=preemptible,
        started_at=started,
        stopping_for=stopping_for,
        cpus=cpus,
    )


def gpu(node: str, index: int, *holders: Holder, total: int = FULL) -> GpuState:
    """A GPU whose free memory is exactly what its holders leave (NVML agrees with the reservations)."""
    held = sum(h.mb for h in holders)
    return GpuState(
        node=node, index=index, total_mb=total, free_mb=total - held, tasks=len(holders), holders=holders
    )


def task(
    tid: str,
    mb: int | None = FULL,
    prio: int = 0,
    placement: Placement = P.GPU,
    k: int | None = None,
    t: float = 0.0,
) -> TaskSpec:
    return TaskSpec(task_id=tid, placement=placement, memory_mb=mb, gpus=k, submitted_at=t, priority=prio)


def decisions(
    tasks: list[TaskSpec], *devs: GpuState, cpus: tuple[NodeCpus, ...] = (), now: float = 0.0
) -> list[Decision]:
    return decide(tasks, Snapshot(gpus=tuple(devs), settings=Settings(), now=now, cpus=cpus))


def by_id(tasks: list[TaskSpec], *devs: GpuState, **kw: object) -> dict[str, Decision]:
    return {d.task_id: d for d in decisions(tasks, *devs, **kw)}  # type: ignore[arg-type]


def preempt(d: Decision) -> tuple[str, set[str]]:
    assert isinstance(d, Preempt), d
    return d.node, set(d.victims)


# ------------------------------------------------------------------------------------------------ order
def test_a_higher_priority_task_submitted_later_launches_first_when_only_one_fits() -> None:
    tasks = [task("LOW", 10000, prio=0, t=0.0), task("HIGH", 10000, prio=5, t=1.0)]
    out = decisions(tasks, gpu("a", 0))
    assert [d.task_id for d in out] == ["HIGH", "LOW"]  # highest priority first
    high, low = out
    assert isinstance(high, Launch) and (high.node, high.gpus) == ("a", (0,))
    assert isinstance(low, Wait) and "10000 MB" in low.reason


def test_submit_order_is_kept_within_a_priority() -> None:
    tasks = [task("A", 8000, prio=1), task("B", 8000, prio=0), task("C", 8000, prio=1), task("D", 8000)]
    out = decisions(tasks, gpu("a", 0))
    assert [d.task_id for d in out] == ["A", "C", "B", "D"]
    assert [type(d) for d in out] == [Launch, Launch, Wait, Wait]


def test_negative_priorities_come_after_the_default() -> None:
    out = by_id([task("NEG", 10000, prio=-3), task("ZERO", 10000)], gpu("a", 0))
    assert isinstance(out["ZERO"], Launch) and isinstance(out["NEG"], Wait)


def test_a_fitting_high_priority_task_launches_without_preempting() -> None:
    out = by_id([task("H", 8000, prio=9)], gpu("a", 0, holder("L", 8000)))
    assert isinstance(out["H"], Launch)


# ------------------------------------------------------------------------------------------- preemption
def test_preempt_chooses_one_big_holder_over_two_small_ones() -> None:
    # the small ones started later: were "most recent" the first rule, they would be chosen
    devs = (
        gpu("a", 0, holder("BIG", 16000, started=10.0)),
        gpu("a", 1, holder("S1", 8000, started=50.0), holder("S2", 8000, started=60.0)),
    )
    out = by_id([task("H", FULL, prio=5)], *devs)
    assert preempt(out["H"]) == ("a", {"BIG"})
    assert "BIG" in out["H"].reason and "lower priority" in out["H"].reason  # type: ignore[union-attr]


def test_two_small_holders_are_preempted_when_the_big_one_may_not_be() -> None:
    devs = (
        gpu("a", 0, holder("BIG", 16000, preemptible=False)),
        gpu("a", 1, holder("S1", 8000, started=50.0), holder("S2", 8000, started=60.0)),
    )
    out = by_id([task("H", FULL, prio=5)], *devs)
    assert preempt(out["H"]) == ("a", {"S1", "S2"})


def test_among_equally_few_victims_the_most_recently_started_goes() -> None:
    devs = (gpu("a", 0, holder("OLD", 16000, started=10.0)), gpu("a", 1, holder("NEW", 16000, started=20.0)))
    assert preempt(by_id([task("H", prio=5)], *devs)["H"]) == ("a", {"NEW"})
    swapped = (
        gpu("a", 0, holder("OLD", 16000, started=30.0)),
        gpu("a", 1, holder("NEW", 16000, started=20.0)),
    )
    assert preempt(by_id([task("H", prio=5)], *swapped)["H"]) == ("a", {"OLD"})


def test_the_most_recently_started_wins_across_nodes_too() -> None:
    devs = (
        gpu("a", 0, holder("ON_A", 16000, started=10.0)),
        gpu("b", 0, holder("ON_B", 16000, started=20.0)),
    )
    assert preempt(by_id([task("H", prio=5)], *devs)["H"]) == ("b", {"ON_B"})


def test_only_the_victims_needed_are_chosen_on_a_shared_gpu() -> None:
    # 16000 on one GPU: X (6000) and Y (6000) leave 4000; stopping one of them makes 10000 free
    devs = (gpu("a", 0, holder("X", 6000, started=1.0), holder("Y", 6000, started=2.0)),)
    assert preempt(by_id([task("H", 10000, prio=1)], *devs)["H"]) == ("a", {"Y"})
    assert preempt(by_id([task("H", 16000, prio=1)], *devs)["H"]) == ("a", {"X", "Y"})


def test_equal_or_higher_priority_holders_are_never_preempted() -> None:
    devs = (gpu("a", 0, holder("EQUAL", 16000, prio=5)), gpu("a", 1, holder("HIGHER", 16000, prio=9)))
    out = by_id([task("H", prio=5)], *devs)
    assert isinstance(out["H"], Wait), out["H"]
    assert out["H"].reason.startswith("needs 16000 MB on 1 GPU")


def test_holders_that_may_not_be_preempted_never_are() -> None:
    devs = (gpu("a", 0, holder("BUSY", 16000, preemptible=False)),)
    out = by_id([task("H", prio=99)], *devs)
    assert isinstance(out["H"], Wait) and "BUSY" in out["H"].reason


def test_no_preempt_when_even_every_candidate_gone_would_not_make_room() -> None:
    # removing LOW leaves HIGHER's 8000: a 16000 MB task still would not fit, so nothing is stopped
    devs = (gpu("a", 0, holder("LOW", 8000), holder("HIGHER", 8000, prio=9)),)
    out = by_id([task("H", FULL, prio=5)], *devs)
    assert isinstance(out["H"], Wait), out["H"]
    assert out["H"].reason.startswith("needs 16000 MB on 1 GPU")


def test_victims_are_all_on_one_node() -> None:
    # a 2-GPU DDP task: node a has one lower-priority GPU and one it may not touch, node b two lower ones
    devs = (
        gpu("a", 0, holder("A0", 16000, started=100.0)),
        gpu("a", 1, holder("A1", 16000, prio=9)),
        gpu("b", 0, holder("B0", 16000, started=1.0)),
        gpu("b", 1, holder("B1", 16000, started=2.0)),
    )
    out = by_id([task("H", 2 * FULL, prio=5, placement=P.DDP, k=2)], *devs)
    assert preempt(out["H"]) == ("b", {"B0", "B1"})


def test_a_multi_gpu_holder_is_one_victim() -> None:
    # D holds both GPUs of node a (a DDP run): stopping it is one victim, fewer than S1 + S2 on node b
    devs = (
        gpu("a", 0, holder("D", 16000, started=1.0)),
        gpu("a", 1, holder("D", 16000, started=1.0)),
        gpu("b", 0, holder("S1", 16000, started=5.0)),
        gpu("b", 1, holder("S2", 16000, started=6.0)),
    )
    out = by_id([task("H", 2 * FULL, prio=5, placement=P.DDP, k=2)], *devs)
    assert preempt(out["H"]) == ("a", {"D"})


def test_cpus_freed_by_the_victim_count_on_its_node() -> None:
    # the node has no free CPU: H (1 CPU) fits only because stopping L also frees L's 2 CPUs
    devs = (gpu("a", 0, holder("L", 16000, cpus=2.0)),)
    out = by_id([task("H", prio=5)], *devs, cpus=(NodeCpus(node="a", free=0.0),))
    assert preempt(out["H"]) == ("a", {"L"})


# -------------------------------------------------------------------------------------- while stopping
def test_victims_stopping_for_the_task_make_it_wait_and_hold_their_gpu() -> None:
    # L (12000) stops for H: the 4000 MB left on the GPU must not go to the lower-priority M meanwhile
    devs = (gpu("a", 0, holder("L", 12000, stopping_for="H")),)
    out = by_id([task("H", FULL, prio=5), task("M", 4000, prio=0)], *devs)
    assert out["H"] == Wait(task_id="H", reason="waiting for L to stop (preempted for it)")
    assert isinstance(out["M"], Wait), out["M"]


def test_without_the_stopping_victim_the_low_task_would_take_that_gpu() -> None:
    # the same GPU, L not preempted: M fits in the 4000 MB left (the hold above is what stops it)
    devs = (gpu("a", 0, holder("L", 12000)),)
    out = by_id([task("M", 4000, prio=0)], *devs)
    assert isinstance(out["M"], Launch)


def test_two_victims_stopping_are_named_in_the_wait_reason() -> None:
    devs = (gpu("a", 0, holder("X", 8000, stopping_for="H"), holder("Y", 8000, stopping_for="H")),)
    out = by_id([task("H", FULL, prio=5)], *devs)
    assert isinstance(out["H"], Wait)
    assert out["H"].reason == "waiting for X and Y to stop (preempted for it)"


def test_a_victim_stopping_for_one_task_is_not_preempted_again_for_another() -> None:
    devs = (gpu("a", 0, holder("L", 16000, stopping_for="H1")),)
    out = by_id([task("H2", prio=9)], *devs)
    assert isinstance(out["H2"], Wait), out["H2"]


def test_no_second_preemption_while_victims_stop() -> None:
    # H's victim is stopping on GPU 0; another lower-priority holder on GPU 1 is left alone
    devs = (gpu("a", 0, holder("L", 16000, stopping_for="H")), gpu("a", 1, holder("OTHER", 16000)))
    out = by_id([task("H", prio=5)], *devs)
    assert isinstance(out["H"], Wait) and "preempted for it" in out["H"].reason


def test_two_high_tasks_in_one_pass_do_not_pick_the_same_victim() -> None:
    devs = (gpu("a", 0, holder("L1", 16000, started=1.0)), gpu("a", 1, holder("L2", 16000, started=2.0)))
    out = by_id([task("H1", prio=5), task("H2", prio=5)], *devs)
    assert preempt(out["H1"]) == ("a", {"L2"})  # the most recent
    assert preempt(out["H2"]) == ("a", {"L1"})


def test_a_second_high_task_waits_when_the_only_victim_is_taken() -> None:
    devs = (gpu("a", 0, holder("L", 16000)),)
    out = by_id([task("H1", prio=5), task("H2", prio=5), task("M", 1000, prio=0)], *devs)
    assert preempt(out["H1"]) == ("a", {"L"})
    assert isinstance(out["H2"], Wait) and isinstance(out["M"], Wait)


def test_a_preempting_task_holds_the_gpu_against_lower_tasks_in_the_same_pass() -> None:
    # L holds 10000: H (16000) preempts it; M (6000) would fit in the rest, but that GPU is H's now
    devs = (gpu("a", 0, holder("L", 10000)),)
    out = by_id([task("H", FULL, prio=5), task("M", 6000, prio=0)], *devs)
    assert preempt(out["H"]) == ("a", {"L"})
    assert isinstance(out["M"], Wait), out["M"]


def test_cpu_tasks_never_preempt() -> None:
    devs = (gpu("a", 0, holder("L", 16000, cpus=8.0)),)
    out = by_id([task("C", None, prio=99, placement=P.CPU)], *devs, cpus=(NodeCpus(node="a", free=0.0),))
    assert isinstance(out["C"], Wait), out["C"]
    assert "CPU" in out["C"].reason


# ---------------------------------------------------------------------------------- failed-twin cache
def test_twins_of_different_priorities_do_not_share_a_cached_wait() -> None:
    # A (priority 5) cannot preempt anything (its only candidate is stopping for B); B (priority 3) is
    # A's twin in every other respect: it must still see that L stops for it, and hold L's GPU
    devs = (gpu("a", 0, holder("L", 12000, stopping_for="B")), gpu("a", 1, holder("X", 16000, prio=9)))
    out = by_id([task("A", FULL, prio=5), task("B", FULL, prio=3), task("M", 4000, prio=0)], *devs)
    assert isinstance(out["A"], Wait) and "preempted for it" not in out["A"].reason
    assert out["B"] == Wait(task_id="B", reason="waiting for L to stop (preempted for it)")
    assert isinstance(out["M"], Wait), out["M"]


def test_a_lower_twin_may_still_preempt_what_a_higher_twin_could_not_use() -> None:
    # twins of priorities 1 and 5: H5 preempts L (priority 0); H1 has nothing left to preempt and waits
    devs = (gpu("a", 0, holder("L", 16000)),)
    out = by_id([task("H1", FULL, prio=1), task("H5", FULL, prio=5)], *devs)
    assert preempt(out["H5"]) == ("a", {"L"})
    assert isinstance(out["H1"], Wait)


def test_twins_of_one_priority_each_see_their_own_stopping_victims() -> None:
    # A and B are twins of the same priority; L stops for B (A was running when B preempted L, and has
    # since been requeued ahead of B). A cannot preempt anything and waits; B must wait for L and hold it
    devs = (gpu("a", 0, holder("L", 12000, stopping_for="B")), gpu("a", 1, holder("X", 16000, prio=9)))
    out = by_id([task("A", FULL, prio=5), task("B", FULL, prio=5), task("M", 4000, prio=0)], *devs)
    assert isinstance(out["A"], Wait)
    assert out["B"] == Wait(task_id="B", reason="waiting for L to stop (preempted for it)")
    assert isinstance(out["M"], Wait), out["M"]
