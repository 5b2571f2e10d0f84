"""Retries end to end on Ray (issue 14), with logical GPUs and the fake probe and memory meter: a run
whose node is removed, or whose rank is SIGKILLed, is retried from its latest valid checkpoint and ends
with the very weights of a run that was never interrupted; a fake out-of-memory run is retried with more
memory; a user exception is not retried; a run whose retries run out lists every attempt's reason.

The two-node test comes first and brings its own cluster (two Ray clusters cannot live in one process);
the others share one module-scoped single-node cluster, created when the first of them needs it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.savepack import layout
from dlnest_ray.savepack.package import SavePackage
from tests.projects import assert_same_state, first_module, write_project
from tests.ray.local_cluster import local_client, tasks, wait_done, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RUN = {"epochs": 6, "step_sleep_s": 0.15}  # long enough to be interrupted after its first checkpoint


def has_checkpoint(client: Any, task_id: str) -> Callable[[], bool]:
    return lambda: bool(SavePackage.open(tasks(client)[task_id]["package"]).checkpoint_ids())


def assert_same_weights(a: str, b: str) -> None:
    """The final checkpoints of two packages hold the same training state, tensor by tensor."""
    sa, sb = SavePackage.open(a).state_dict(), SavePackage.open(b).state_dict()
    assert sa["finished_epoch"] == sb["finished_epoch"] == RUN["epochs"] - 1
    for key in ("runner", "global_step", "finished_epoch", "rng"):
        assert_same_state(sa[key], sb[key], key)
    assert first_module(sa) and all(first_module(sa)[k].equal(v) for k, v in first_module(sb).items())


def assert_retried_segments(package: str, task_id: str, reason: str) -> None:
    """Each attempt is a segment of its own; the retry says why the attempt before ended, in its segment
    and in the output right after its marker."""
    segs = [s for s in SavePackage.open(package).meta["segments"] if s.get("task_id") == task_id]
    assert [(s.get("attempt"), s.get("retry_reason")) for s in segs] == [(1, None), (2, reason)]
    assert segs[1]["kind"] == "resume" and segs[1]["status"] == "succeeded"
    lines = (Path(package) / "_output.txt").read_text().splitlines()
    at = lines.index(f"== attempt 2: {reason} ==")
    assert lines[at - 1].startswith(f"== {task_id} started ")


# ------------------------------------------------------------------------------------------- two nodes
@pytest.fixture
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    os.environ["DLNEST_RAY_FAKE_GPUS"] = "2x16000"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "num_gpus": 2,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    try:
        node_b = cluster.add_node(num_cpus=1, num_gpus=2)
        ray.init(address=cluster.address, namespace=NAMESPACE, logging_level="ERROR")
        yield Client(get_or_create_center(str(tmp_path_factory.mktemp("home2")))), cluster, node_b
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop("DLNEST_RAY_FAKE_GPUS", None)


def test_a_run_whose_node_is_removed_is_retried_on_the_other_node_with_the_same_weights(
    two_nodes: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    client, cluster, node_b = two_nodes
    b = node_b.node_id[:8]
    a = next(d.node for d in client.get_devices_info() if d.node != b)
    cfg = write_project(tmp_path / "p", **RUN)  # type: ignore[arg-type]
    client.change_devices([f"{a}:gpu0"])
    reference = client.run_train(str(cfg), memory_mb=4000)  # uninterrupted, on node A
    client.change_devices([f"{b}:gpu0"])
    victim = client.run_train(str(cfg), memory_mb=4000)
    assert (tasks(client)[reference]["node"], tasks(client)[victim]["node"]) == (a, b)
    client.change_devices([f"{n}:gpu{g}" for n in (a, b) for g in (0, 1)])
    wait_for(has_checkpoint(client, victim), 120, "the run on node B to save a checkpoint")
    cluster.remove_node(node_b)
    done = wait_done(client, [reference, victim])
    row = done[victim]
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("SUCCEEDED", 2, ["node lost"]), row[
        "error"
    ]
    assert row["node"] == a and done[reference]["status"] == "SUCCEEDED", done[reference]["error"]
    assert_retried_segments(row["package"], victim, "node lost")
    assert_same_weights(row["package"], done[reference]["package"])
    log = "\n".join(client.get_dlnest_output(0)["lines"])
    assert f"{victim} attempt 1 ended: node lost; retrying (attempt 2/3)" in log


# ------------------------------------------------------------------------------------------- one node
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_client(tmp_path_factory.mktemp("home"), num_cpus=3) as c:
        yield c


def test_a_rank_killed_with_sigkill_is_retried_and_ends_with_the_same_weights(
    client: Any, tmp_path: Path
) -> None:
    cfg = write_project(tmp_path / "p", **RUN)  # type: ignore[arg-type]
    reference = client.run_train(str(cfg), memory_mb=4000)
    victim = client.run_train(str(cfg), memory_mb=4000)
    package = Path(tasks(client)[victim]["package"])
    wait_for(has_checkpoint(client, victim), 120, "a first checkpoint")
    pid, _ = layout.parse_pid_record(layout.pid_file(package, victim, 0).read_text())
    os.kill(pid, signal.SIGKILL)
    done = wait_done(client, [reference, victim])
    row = done[victim]
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("SUCCEEDED", 2, ["worker died"]), row
    segs = [s for s in SavePackage.open(package).meta["segments"] if s.get("task_id") == victim]
    assert segs[0].get("ended") is None  # killed mid-run: its first segment never ended
    assert_retried_segments(str(package), victim, "worker died")
    assert_same_weights(str(package), done[reference]["package"])


def test_out_of_memory_is_retried_with_more_memory_a_user_error_never_and_exhaustion_lists_reasons(
    client: Any, tmp_path: Path
) -> None:
    grows = write_project(tmp_path / "grows", epochs=3, extra={"fake_gpu_mb": [1000, 1000, 5000]})
    user = write_project(tmp_path / "user", epochs=3, fail_at_epoch=1)
    huge = write_project(tmp_path / "huge", epochs=2, extra={"fake_gpu_mb": [20000]})
    oom = client.run_train(str(grows), memory_mb=4000)
    bug = client.run_train(str(user), memory_mb=4000)
    out = client.run_train(str(huge), memory_mb=4000, retries=1)
    done = wait_done(client, [oom, bug, out], timeout=180)

    row = done[oom]  # (d): epoch 2 needs 5000 + 300 MB: raised past that, resumed from epoch 1
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("SUCCEEDED", 2, ["out of memory"]), row
    assert row["memory_source"] == "raised after out of memory (attempt 1)" and row["memory_auto"] is False
    peak = row["peak_mb"]
    assert peak >= 5300 and row["memory_mb"] == max(-(-peak * 115 // 100), 6000) == row["mb_per_gpu"]
    assert_retried_segments(row["package"], oom, "out of memory")

    row = done[bug]  # (e): the user's own exception: one attempt, its error as it was
    assert (row["status"], row["attempt"], row["attempt_reasons"]) == ("FAILED", 1, []), row
    assert "injected" in row["error"] and "attempt" not in row["error"]

    row = done[out]  # (f): 20300 MB fits no GPU: raised to the largest (16000), then no retries left
    assert (row["status"], row["attempt"], row["attempts"]) == ("FAILED", 2, 2), row
    assert row["attempt_reasons"] == ["out of memory"] and row["mb_per_gpu"] == 16000
    assert "ran out of its 16000 MB" in row["error"]
    assert row["error"].endswith("(attempt 2/2; out of memory, no retries left; earlier: 1 out of memory)")


def test_c_a_low_priority_run_preempted_by_a_high_one_resumes_to_the_same_weights(
    client: Any, tmp_path: Path
) -> None:
    """(c): GPU 1 runs the uninterrupted reference (immune), GPU 0 the low-priority run; a high-priority
    run that fits on neither preempts the low one, which stops at an epoch boundary with a checkpoint its
    life cycle would not have taken (it saves only at the end), waits, and resumes once the high one is
    done — both SUCCEEDED, and the low one's final weights equal the reference's."""
    cfg = write_project(tmp_path / "p", save_every=RUN["epochs"], **RUN)  # type: ignore[arg-type]
    client.change_devices([f"{d.node}:gpu1" for d in client.get_devices_info() if d.gpu == 1])
    reference = client.run_train(str(cfg), memory_mb=10000, no_preempt=True)
    client.change_devices([f"{d.node}:gpu0" for d in client.get_devices_info() if d.gpu == 0])
    low = client.run_train(str(cfg), memory_mb=10000)
    client.change_devices([f"{d.node}:gpu{d.gpu}" for d in client.get_devices_info()])
    package = Path(tasks(client)[low]["package"])
    wait_for(lambda: tasks(client)[low]["phase"] == "running", 60, "the low-priority run to start")
    time.sleep(1.5)  # into its first epoch
    high = client.run_train(str(cfg), memory_mb=10000, priority=5)
    row = tasks(client)[low]
    assert (row["status"], row["preempted_by"]) == ("PREEMPTED", high), row
    wait_for(lambda: tasks(client)[low]["status"] == "PENDING", 90, "the low run to stop at an epoch's end")
    row = tasks(client)[low]
    assert row["wait_reason"].startswith(f"preempted by {high}") and row["resume"] is True, row
    pinned = SavePackage.open(package).manifest.ckpt_pinned
    assert len(pinned) == 1, pinned  # the checkpoint it stopped with, kept for its resume
    done = wait_done(client, [reference, low, high], timeout=240)
    assert [done[t]["status"] for t in (reference, low, high)] == ["SUCCEEDED"] * 3, done
    assert (done[low]["attempt"], done[low]["preemptions"], done[low]["preempted_by"]) == (1, 1, "")
    segs = [s for s in SavePackage.open(package).meta["segments"] if s.get("task_id") == low]
    assert [s["status"] for s in segs] == ["preempted", "succeeded"]
    assert segs[1]["from_checkpoint"] == pinned[0] and SavePackage.open(package).manifest.ckpt_pinned == ()
    assert done[high]["started_at"] < done[low]["started_at"]  # the high one ran in the meantime
    assert_same_weights(str(package), done[reference]["package"])
    log = "\n".join(client.get_dlnest_output(0)["lines"])
    assert f"{low} preempted for {high} (priority 5 > 0): stops at the end of its epoch" in log
    assert f"{low} back in the queue: preempted by {high}, resumes from the checkpoint it took" in log
