"""End to end on a local Ray with logical GPUs (``num_gpus=2``) and the fake probe (2 x 16000 MB):
submit → placement group → rank tasks → report, DDP over Ray, delete, center restart, bad submits."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack import layout
from dlnest_ray.savepack.package import SavePackage
from tests.projects import write_project
from tests.ray.local_cluster import local_client, tasks, wait_done, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_client(tmp_path_factory.mktemp("home"), num_cpus=2) as c:
        yield c


def node_of(client: Any) -> str:
    return client.get_devices_info()[0].node


def test_two_runs_share_gpu0_and_a_third_waits_then_starts(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=2, step_sleep_s=0.2)
    node = node_of(client)
    client.change_devices([f"{node}:gpu0"])
    try:
        ids = [client.run_train(str(cfg), memory_mb=8000) for _ in range(3)]
        now = tasks(client)
        assert [now[i]["status"] for i in ids[:2]] == ["RUNNING", "RUNNING"]
        assert all(now[i]["gpus"] == [0] and now[i]["mb_per_gpu"] == 8000 for i in ids[:2])
        assert now[ids[2]]["status"] == "PENDING"
        held = f"{ids[0]} (8000) and {ids[1]} (8000)"
        assert now[ids[2]]["wait_reason"] == f"needs 8000 MB on 1 GPU; {node}:gpu0 has 0 MB left after {held}"
        reserved = {d["gpu"]: d["reserved_mb"] for d in [d.to_json() for d in client.get_devices_info()]}
        assert reserved == {0: 16000, 1: 0}
        done = wait_done(client, ids)
    finally:
        client.change_devices([f"{node}:gpu0", f"{node}:gpu1"])
    assert [done[i]["status"] for i in ids] == ["SUCCEEDED"] * 3, [done[i]["error"] for i in ids]
    assert done[ids[2]]["started_at"] >= min(done[i]["ended_at"] for i in ids[:2])  # started when one ended
    for i in ids:
        pkg = SavePackage.open(done[i]["package"])
        seg = pkg.meta["segments"][-1]
        assert (seg["status"], seg["task_id"], seg["cuda_visible_devices"]) == ("succeeded", i, "0")
        assert pkg.latest_valid_id() is not None
    assert {d["reserved_mb"] for d in [d.to_json() for d in client.get_devices_info()]} == {0}


def test_ddp_two_ranks_through_ray(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=2)
    tid = client.run_train(str(cfg), memory_mb=8000, placement="ddp", gpus=2)
    rec = tasks(client)[tid]
    assert sorted(rec["gpus"]) == [0, 1] and rec["mb_per_gpu"] == 4000
    done = wait_done(client, [tid])[tid]
    assert done["status"] == "SUCCEEDED", done["error"]
    package = Path(done["package"])
    assert (package / "_output_0.txt").is_file() and (package / "_output_1.txt").is_file()
    segs = SavePackage.open(package).meta["segments"]
    assert {(s["env"], s["world_size"]) for s in segs} == {("DDP", 2)}
    assert SavePackage.open(package).state_dict()["finished_epoch"] == 1


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def test_del_of_a_running_ddp_run_leaves_no_process_and_a_loadable_ckpt(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=50, step_sleep_s=0.05)
    tid = client.run_train(str(cfg), memory_mb=8000, placement="ddp", gpus=2)
    package = Path(tasks(client)[tid]["package"])
    wait_for(lambda: SavePackage.open(package).checkpoint_ids() != [], 120, "a first checkpoint")
    run_dir = package / ".dlnest_run"
    records = [layout.parse_pid_record(f.read_text()) for f in run_dir.glob(f"{tid}.rank*.pgid")]
    pgids = [pgid for pgid, _ in records]
    assert len(pgids) == 2
    # each group is recorded with its node, so the supervisor kills it there only
    assert {node for _, node in records} == {tasks(client)[tid]["node"]}
    client.del_task(tid)
    assert tasks(client)[tid]["cancelling"] is True
    t0 = time.monotonic()
    done = wait_done(client, [tid], timeout=60)[tid]
    assert done["status"] == "CANCELLED"
    wait_for(lambda: not any(_group_alive(g) for g in pgids), 15, "the run's processes to be gone")
    assert time.monotonic() - t0 < 60
    state = SavePackage.open(package).state_dict()  # the latest valid checkpoint loads
    assert state["finished_epoch"] >= 0
    assert {d["reserved_mb"] for d in [d.to_json() for d in client.get_devices_info()]} == {0}


def test_center_restart_keeps_the_queue_and_reattaches_running_runs(client: Any, tmp_path: Path) -> None:
    import ray

    from dlnest_ray.actors.names import get_center

    long_cfg = write_project(tmp_path / "long", epochs=3, step_sleep_s=0.3)
    running = [client.run_train(str(long_cfg), memory_mb=12000) for _ in range(2)]
    queued = [client.run_train(str(long_cfg), memory_mb=12000) for _ in range(20)]
    before = tasks(client)
    assert [before[i]["status"] for i in running] == ["RUNNING", "RUNNING"]
    assert all(before[i]["status"] == "PENDING" for i in queued)
    ray.kill(get_center(), no_restart=False)
    wait_for(lambda: _pings(get_center()), 60, "the center to restart")
    after = tasks(client)
    assert [after[i]["status"] for i in running] == ["RUNNING", "RUNNING"]  # re-attached
    assert [i for i in after if after[i]["status"] == "PENDING"] == queued  # none lost, same order
    for tid in queued[2:]:
        client.del_task(tid)
    done = wait_done(client, running + queued[:2])
    assert [done[i]["status"] for i in running + queued[:2]] == ["SUCCEEDED"] * 4


def _pings(center: Any) -> bool:
    import ray

    try:
        return bool(ray.get(center.ping.remote(), timeout=5) == "ok")
    except Exception:
        return False


def test_bad_submits_are_refused_and_create_no_package(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=1)
    saves = cfg.parent / "Saves"
    with pytest.raises(DlnestError, match="not found"):
        client.run_train(str(tmp_path / "missing.json"))
    (cfg.parent / "Model" / "Model.py").unlink()
    with pytest.raises(DlnestError, match="code files not found"):
        client.run_train(str(cfg))
    write_project(tmp_path / "p2", epochs=1)
    with pytest.raises(DlnestError, match="can never run here"):
        client.run_train(str(tmp_path / "p2" / "root_config.json"), memory_mb=40000)
    assert not saves.exists() and not (tmp_path / "p2" / "Saves").exists()
    with pytest.raises(DlnestError, match="no task"):
        client.del_task("T_9999")


def test_del_of_a_ddp_run_in_the_middle_of_a_checkpoint_save(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=200, ballast_mb=300, step_sleep_s=0.05)
    tid = client.run_train(str(cfg), memory_mb=8000, placement="ddp", gpus=2)
    package = Path(tasks(client)[tid]["package"])
    ckpts = package / "Checkpoints"
    wait_for(lambda: SavePackage.open(package).latest_valid_id() is not None, 120, "a first valid checkpoint")
    wait_for(lambda: any(ckpts.glob(".state_*.ckpt.tmp-*")), 60, "a checkpoint write in flight")
    pgids = [
        layout.parse_pid_record(f.read_text())[0] for f in (package / ".dlnest_run").glob(f"{tid}.rank*.pgid")
    ]
    client.del_task(tid)  # caught mid-save
    t0 = time.monotonic()
    wait_for(lambda: not any(_group_alive(g) for g in pgids), 15, "no process of the run within 15 s")
    assert len(pgids) == 2 and time.monotonic() - t0 < 15
    done = wait_done(client, [tid], timeout=60)[tid]
    assert done["status"] == "CANCELLED"
    pkg = SavePackage.open(package)
    state = pkg.state_dict()  # the latest valid checkpoint loads (verified size and sha256)
    assert state["life_cycle"]["ballast"].numel() == 300 * 2**18
    assert pkg.latest_valid_id() == max(pkg.checkpoint_ids())


def test_continue_through_the_queue_resumes_at_the_next_epoch(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=2)
    first = client.run_train(str(cfg), memory_mb=4000)
    package = wait_done(client, [first])[first]["package"]
    assert SavePackage.open(package).state_dict()["finished_epoch"] == 1
    again = client.continue_train(package, memory_mb=4000, description="one more epoch")
    with pytest.raises(DlnestError, match="unfinished task"):
        client.continue_train(package, memory_mb=4000)  # one task per package at a time
    done = wait_done(client, [again])[again]
    assert done["status"] == "SUCCEEDED", done["error"]
    pkg = SavePackage.open(package)
    assert pkg.state_dict()["finished_epoch"] == 2  # resumed at finished_epoch + 1
    kinds = [(s["kind"], s["task_id"]) for s in pkg.meta["segments"]]
    assert kinds == [("train", first), ("resume", again)]
    assert "resuming from checkpoint" in (Path(package) / "_output.txt").read_text()


def ray_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def test_a_failing_cpu_run_reports_its_error_and_output_tail(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=3, fail_at_epoch=1)
    tid = client.run_train(str(cfg), placement="cpu")
    placed = tasks(client)[tid]
    assert placed["gpus"] == [] and placed["node"] in {n["NodeID"][:8] for n in ray_nodes()}  # most free CPUs
    done = wait_done(client, [tid])[tid]
    assert done["status"] == "FAILED"
    assert "injected failure at epoch 1" in done["error"]
    assert any("injected failure at epoch 1" in line for line in done["output_tail"])  # the traceback's end
    pkg = SavePackage.open(done["package"])
    assert pkg.meta["segments"][-1]["status"] == "failed"
    assert pkg.state_dict()["finished_epoch"] == 0  # the epoch before the failure was saved and loads


# ------------------------------------------------------------------------------------------ memory
def _on_gpu0(client: Any) -> Callable[[], None]:
    """Only gpu0 is enabled until the returned function is called."""
    node = node_of(client)
    client.change_devices([f"{node}:gpu0"])
    return lambda: client.change_devices([f"{node}:gpu0", f"{node}:gpu1"])


def test_a_default_run_right_sizes_after_its_first_epoch_and_a_twin_then_runs_beside_it(
    client: Any, tmp_path: Path
) -> None:
    import math

    from dlnest_ray.savepack.metrics import read_metrics

    cfg = write_project(tmp_path / "p", epochs=4, step_sleep_s=0.2, extra={"fake_gpu_mb": 3000})
    restore = _on_gpu0(client)
    try:
        a, b = client.run_train(str(cfg)), client.run_train(str(cfg))
        now = tasks(client)
        assert (now[a]["status"], now[a]["mb_per_gpu"], now[b]["status"]) == ("RUNNING", 14400, "PENDING")
        seen: list[tuple[bool, str]] = []

        def b_started() -> bool:
            now = tasks(client)
            seen.append((now[a]["right_sized"], now[b]["status"]))
            return now[b]["status"] != "PENDING"

        wait_for(b_started, 120, f"{b} to start")
        assert all(
            sized for sized, st in seen if st != "PENDING"
        )  # placed once a was right-sized, not before
        done = wait_done(client, [a, b])
    finally:
        restore()
    assert [done[i]["status"] for i in (a, b)] == ["SUCCEEDED"] * 2, [done[i]["error"] for i in (a, b)]
    peak = 3000 + 300  # the fake allocation and the fake CUDA context
    sized = math.ceil(peak * 1.15)
    assert (done[a]["peak_mb"], done[a]["first_mb_per_gpu"], done[a]["mb_per_gpu"]) == (peak, 14400, sized)
    assert done[b]["memory_source"] == f"running twin {a} (peak {peak} MB)" and done[b]["mb_per_gpu"] == sized
    assert done[b]["started_at"] < done[a]["ended_at"]  # they ran together on the one GPU
    column = read_metrics(layout.metrics_path(Path(done[a]["package"])))["gpu_peak_mb"]
    assert [int(v) for v in column] == [peak] * 4
    assert SavePackage.open(done[a]["package"]).meta["segments"][-1]["peak_gpu_mb"] == peak


def test_a_run_that_outgrows_its_reservation_fails_alone_and_says_what_to_ask(
    client: Any, tmp_path: Path
) -> None:
    grows = write_project(tmp_path / "grows", epochs=3, step_sleep_s=0.1, extra={"fake_gpu_mb": [1000, 5000]})
    steady = write_project(tmp_path / "steady", epochs=3, step_sleep_s=0.3, extra={"fake_gpu_mb": 1000})
    restore = _on_gpu0(client)
    try:
        c = client.run_train(str(grows), memory_mb=4000, retries=0)  # retried: see test_retries_e2e.py
        d = client.run_train(str(steady), memory_mb=4000)
        assert {tasks(client)[i]["status"] for i in (c, d)} == {"RUNNING"}
        done = wait_done(client, [c, d])
    finally:
        restore()
    assert done[c]["status"] == "FAILED"
    assert (
        done[c]["error"]
        == f"{c} ran out of its 4000 MB on gpu0 (peak 5300 MB): resubmit with --memory 6100 or more"
    )
    assert done[c]["peak_mb"] == 5300  # what it reached, from its package: `tasks` shows 4000 → 5300 MB
    assert done[d]["status"] == "SUCCEEDED", done[d]["error"]


def _warm_state() -> str:
    import ray

    from dlnest_ray.actors.ray_ports import alive_nodes, monitor_for

    (full,) = alive_nodes().values()
    return str(ray.get(monitor_for(full).warm_state.remote(), timeout=30))


def test_single_rank_runs_start_in_the_warm_rank_process(client: Any, tmp_path: Path) -> None:
    """Issue 16: a single-rank run starts in the node's warm rank process (torch imported ahead; its
    segment says ``warm_start``) and the monitor starts the next one; a run whose environment sets a
    variable torch reads at import starts cold in a fresh worker; a warm run deleted while it trains is
    CANCELLED and its process is gone."""
    records = {k: tmp_path / f"records_{k}" for k in ("warm", "cold")}
    for folder in records.values():
        folder.mkdir()
    cfg = write_project(tmp_path / "p", epochs=1, record_dir=records["warm"])
    wait_for(lambda: _warm_state() == "ready", 180, "the node's warm rank process")
    assert client.code_skew() is None  # the center runs this code (:mod:`dlnest_ray.codeid`)
    # the cold one first: it leaves the warm process to the next run (one at a time, so the reasons are sure)
    niced = write_project(tmp_path / "niced", epochs=1, record_dir=records["cold"], extra={"nice": 4})
    cold = client.run_train(str(niced), memory_mb=1000, env={"TORCH_SHOW_CPP_STACKTRACES": "1"})
    wait_done(client, [cold])
    warm = client.run_train(str(cfg), memory_mb=1000)
    done = wait_done(client, [warm, cold])
    assert [done[t]["status"] for t in (warm, cold)] == ["SUCCEEDED"] * 2, [
        done[t]["error"] for t in (warm, cold)
    ]
    starts = [SavePackage.open(done[t]["package"]).meta["segments"][-1]["warm_start"] for t in (warm, cold)]
    assert starts == [True, False]
    lines = client.get_dlnest_output(0)["lines"]
    assert any(f"{warm} starts in the warm rank process of " in line for line in lines), lines
    why = "starts cold: the run sets TORCH_SHOW_CPP_STACKTRACES='1', which torch reads at import"
    assert any(f"{cold} {why}" in line for line in lines), lines
    # every thread of each rank (a single process: rank -1) runs at its config's niceness (the default
    # 10; the cold run asked for 4) or at a lower priority still (Ray runs a few threads of its own at 15)
    nice = {k: json.loads((d / "rank-1.json").read_text())["thread_nice"] for k, d in records.items()}
    assert {k: v[0] for k, v in nice.items()} == {"warm": 10, "cold": 4}, nice

    wait_for(lambda: _warm_state() == "ready", 180, "the next warm rank process")
    long = write_project(tmp_path / "long", epochs=50, step_sleep_s=0.05)
    tid = client.run_train(str(long), memory_mb=1000)
    package = Path(tasks(client)[tid]["package"])
    wait_for(lambda: SavePackage.open(package).checkpoint_ids() != [], 120, "a first checkpoint")
    (record,) = [
        layout.parse_pid_record(f.read_text()) for f in (package / ".dlnest_run").glob(f"{tid}.rank*.pgid")
    ]
    client.del_task(tid)
    done = wait_done(client, [tid], timeout=60)
    assert done[tid]["status"] == "CANCELLED"
    assert SavePackage.open(package).meta["segments"][-1]["warm_start"] is True
    wait_for(lambda: not _group_alive(record[0]), 15, "the warm process to be gone")
