"""Two nodes (``ray.cluster_utils.Cluster``), each with 2 fake GPUs of 16000 MB: runs that each need a
whole GPU land on both nodes, each pinned to the node and GPU the policy chose."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.savepack.package import SavePackage
from tests.projects import write_project

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    os.environ["DLNEST_RAY_FAKE_GPUS"] = "2x16000"  # every node's processes inherit it
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 2})
    try:
        cluster.add_node(num_cpus=1, num_gpus=2)
        ray.init(address=cluster.address, namespace=NAMESPACE, logging_level="ERROR")
        yield Client(get_or_create_center(str(tmp_path_factory.mktemp("home"))))
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop("DLNEST_RAY_FAKE_GPUS", None)


def test_runs_land_on_both_nodes(client: Any, tmp_path: Path) -> None:
    devices = [d.to_json() for d in client.get_devices_info()]
    nodes = sorted({d["node"] for d in devices})
    assert len(nodes) == 2 and len(devices) == 4
    cfg = write_project(tmp_path / "p", epochs=1)
    ids = [client.run_train(str(cfg), memory_mb=14000) for _ in range(4)]
    rows = {t["task_id"]: t for t in [t.to_row() for t in client.get_task_info()]}
    # each node has one CPU: one run per node at a time, the others wait for a CPU (not for Ray)
    running = [rows[i] for i in ids if rows[i]["status"] == "RUNNING"]
    assert sorted(r["node"] for r in running) == nodes
    waiting = [rows[i] for i in ids if rows[i]["status"] == "PENDING"]
    assert len(waiting) == 2 and all("needs 1 CPU on the node of" in r["wait_reason"] for r in waiting)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = {t["task_id"]: t for t in [t.to_row() for t in client.get_task_info(include_finished=True)]}
        if all(done[i]["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") for i in ids):
            break
        time.sleep(0.5)
    assert [done[i]["status"] for i in ids] == ["SUCCEEDED"] * 4, [done[i]["error"] for i in ids]
    for i in ids:  # the run really ran on the node the policy chose
        seg = SavePackage.open(done[i]["package"]).meta["segments"][-1]
        assert (seg["node"], seg["cuda_visible_devices"]) == (done[i]["node"], str(done[i]["gpus"][0]))
