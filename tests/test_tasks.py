"""The task state machine (tasks.py): the full transition matrix, timestamps, and the JSON record."""

from __future__ import annotations

import itertools
import json

import pytest

from dlnest_ray.errors import DlnestError
from dlnest_ray.scheduling.specs import Placement
from dlnest_ray.tasks import InvalidTransition, TaskKind, TaskRecord, TaskStatus, requeue, transition

S = TaskStatus
ALLOWED = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.PENDING),  # requeue: the run never started a rank
    (S.RUNNING, S.PREEMPTED),  # stopping for a higher-priority task
    (S.PREEMPTED, S.PENDING),  # stopped: back in the queue as a continuation
    (S.PREEMPTED, S.SUCCEEDED),  # it ended before the epoch boundary
    (S.PREEMPTED, S.FAILED),
    (S.PREEMPTED, S.CANCELLED),
    (S.RUNNING, S.STOPPED),  # a sweep trial stopped early by its sweep's rule, at its epoch boundary
    (S.PREEMPTED, S.STOPPED),  # the rule stopped it while it was stopping for another task
    (S.PENDING, S.STOPPED),  # a waiting trial (preempted or retried before) the rule stops at once
}
ALL_PAIRS = list(itertools.product(TaskStatus, TaskStatus))


def record(status: TaskStatus = S.PENDING, **kw) -> TaskRecord:
    return TaskRecord(task_id="T_0007", package="/pkg", submitted_at=100.0, status=status, **kw)


def test_matrix_covers_every_pair():
    assert len(ALL_PAIRS) == 49
    assert ALLOWED.issubset(ALL_PAIRS)


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str))
def test_allowed_transitions(old: TaskStatus, new: TaskStatus):
    before = record(old)
    after = transition(before, new, at=200.0)
    assert after.status is new
    assert before.status is old  # records are immutable: transition returns a new one
    assert after.task_id == before.task_id and after.package == before.package


@pytest.mark.parametrize(("old", "new"), sorted(set(ALL_PAIRS) - ALLOWED, key=str))
def test_every_other_transition_raises(old: TaskStatus, new: TaskStatus):
    with pytest.raises(InvalidTransition) as info:
        transition(record(old), new, at=200.0)
    assert isinstance(info.value, DlnestError)
    assert "T_0007" in str(info.value)
    assert str(old) in str(info.value) and str(new) in str(info.value)


def test_is_terminal():
    assert {s for s in TaskStatus if s.is_terminal()} == {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.STOPPED}
    assert not S.PENDING.is_terminal() and not S.RUNNING.is_terminal()


def test_is_active():
    """RUNNING and PREEMPTED (stopping) tasks hold their GPUs; the others do not."""
    assert {s for s in TaskStatus if s.is_active()} == {S.RUNNING, S.PREEMPTED}


def test_str_is_value():
    assert str(S.RUNNING) == "RUNNING"
    assert TaskStatus("FAILED") is S.FAILED


def test_running_sets_started_at_and_clears_wait_reason():
    pending = record(wait_reason="needs 12000 MB on 1 GPU")
    running = transition(pending, S.RUNNING, at=150.0, node="n", gpus=(1,), mb_per_gpu=12000)
    assert running.started_at == 150.0
    assert running.ended_at is None
    assert running.wait_reason == ""
    assert (running.node, running.gpus, running.mb_per_gpu) == ("n", (1,), 12000)
    assert running.submitted_at == 100.0


@pytest.mark.parametrize("final", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_terminal_sets_ended_at_and_keeps_started_at(final: TaskStatus):
    running = transition(record(), S.RUNNING, at=150.0)
    done = transition(running, final, at=300.0, error="boom", output_tail=("a", "b"))
    assert done.started_at == 150.0
    assert done.ended_at == 300.0
    assert done.error == "boom" and done.output_tail == ("a", "b")


@pytest.mark.parametrize("final", [S.CANCELLED, S.FAILED])
def test_pending_to_terminal_has_no_start(final: TaskStatus):
    done = transition(record(), final, at=120.0)
    assert done.started_at is None
    assert done.ended_at == 120.0


def test_no_resurrection_after_terminal():
    done = transition(transition(record(), S.RUNNING, at=1.0), S.SUCCEEDED, at=2.0)
    for new in TaskStatus:
        with pytest.raises(InvalidTransition):
            transition(done, new, at=3.0)


def test_json_round_trip_with_tuples_and_enums():
    rec = TaskRecord(
        task_id="A_0012",
        kind=TaskKind.ANALYZE,
        status=S.FAILED,
        package="/some/pkg",
        description="desc",
        name="proj",
        placement=Placement.DDP,
        memory_mb=20000,
        gpus_requested=2,
        resume=True,
        ckpt_id=3,
        submitted_at=1.5,
        started_at=2.5,
        ended_at=3.5,
        node="node-1",
        gpus=(0, 3),
        mb_per_gpu=10000,
        wait_reason="",
        error="oops",
        output_tail=("line 1", "line 2"),
    )
    data = rec.to_json()
    # plain JSON types only
    assert data["kind"] == "A" and data["status"] == "FAILED" and data["placement"] == "ddp"
    assert data["gpus"] == [0, 3] and data["output_tail"] == ["line 1", "line 2"]
    back = TaskRecord.from_json(json.loads(json.dumps(data)))
    assert back == rec
    assert isinstance(back.gpus, tuple) and isinstance(back.output_tail, tuple)
    assert back.kind is TaskKind.ANALYZE and back.status is S.FAILED and back.placement is Placement.DDP
    assert back.world_size == 2


def test_from_json_ignores_unknown_keys_and_defaults_tuples():
    data = record().to_json()
    data["some_future_field"] = 1
    del data["gpus"], data["output_tail"]
    back = TaskRecord.from_json(data)
    assert back == record()


def test_spec_and_world_size():
    rec = record(placement=Placement.MULTI, memory_mb=30000, gpus_requested=2)
    spec = rec.spec
    assert (spec.task_id, spec.placement, spec.memory_mb, spec.gpus, spec.submitted_at) == (
        "T_0007",
        Placement.MULTI,
        30000,
        2,
        100.0,
    )
    # only DDP runs one rank per GPU
    assert record(placement=Placement.MULTI, gpus=(0, 1)).world_size == 1
    assert record(placement=Placement.DDP, gpus=(0, 1, 2)).world_size == 3
    assert record(placement=Placement.DDP).world_size == 1


def test_requeue_forgets_the_placement_and_keeps_the_place_in_the_queue():
    running = transition(record(), S.RUNNING, at=200.0, node="n1", gpus=(0, 1), mb_per_gpu=4000, phase="x")
    back = requeue(running, reason="waits for up")
    assert back.status is S.PENDING and back.submitted_at == 100.0
    assert (back.node, back.gpus, back.mb_per_gpu, back.started_at, back.phase) == (None, (), 0, None, "")
    assert back.wait_reason == "waits for up"
    with pytest.raises(InvalidTransition):
        requeue(transition(running, S.SUCCEEDED, at=300.0), reason="")


def test_status_kind_and_placement_print_as_their_values() -> None:
    from dlnest_ray.actors.jobs import JobState

    # Users print records from the Python client; they must read as `tasks` shows them.
    assert [str(TaskStatus.SUCCEEDED), f"{TaskKind.TRAIN}", str(JobState.QUEUED), f"{Placement.DDP}"] == [
        "SUCCEEDED",
        "T",
        "QUEUED",
        "ddp",
    ]


def test_a_sweep_id_is_no_task_kind() -> None:
    assert TaskKind.of("T_0007") is TaskKind.TRAIN and TaskKind.of("A_0003") is TaskKind.ANALYZE
    assert TaskKind.of("S_0001") is None  # sweeps are units of their own (issue 15), not tasks


def test_sweep_fields_round_trip_and_default_for_old_records() -> None:
    trial = record(sweep="S_0001", sweep_label="lr=0.01", stop_reason="median stopping at epoch 2")
    assert TaskRecord.from_json(json.loads(json.dumps(trial.to_json()))) == trial
    old = {k: v for k, v in record().to_json().items() if k not in ("sweep", "sweep_label", "stop_reason")}
    back = TaskRecord.from_json(old)
    assert (back.sweep, back.sweep_label, back.stop_reason) == ("", "", "")
