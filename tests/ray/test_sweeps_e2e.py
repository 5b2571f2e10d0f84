"""Sweeps end to end on Ray (issue 15), with 2 logical GPUs and the fake probe, on the MNIST template with a
small network and 2,000 training images: a 2×3 grid whose trials share a card, all succeeding and ranked
by ``compare S_0001``; median stopping that stops the hopeless trial (lr=10) at an epoch boundary and none
of the good ones, the stopped trial then resumed by ``continue``; ``del S_…`` leaving no trial running and
no process behind."""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlnest_ray.project import create_project
from dlnest_ray.savepack import layout
from dlnest_ray.savepack.package import SavePackage
from tests.ray.local_cluster import local_client, tasks, wait_done, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMALL = {"channels": [8, 16], "hidden": 32}  # a small CNN: an epoch of 2,000 images in a second or two


def _idx(path: Path, data: np.ndarray, magic: int) -> None:
    path.write_bytes(
        struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in data.shape) + data.tobytes()
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """The MNIST template on 2,000 training images and 500 validation images (IDX files cut from the real
    t10k set), a small network; returns its root_config.json."""
    root = tmp_path_factory.mktemp("sweeps")
    data = root / "mnist"
    data.mkdir()
    images = np.frombuffer(
        gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16
    )
    labels = np.frombuffer(
        gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    images = images.reshape(-1, 28, 28)
    _idx(data / "train-images-idx3-ubyte", images[:2000], 2051)
    _idx(data / "train-labels-idx1-ubyte", labels[:2000], 2049)
    _idx(data / "t10k-images-idx3-ubyte", images[2000:2500], 2051)
    _idx(data / "t10k-labels-idx1-ubyte", labels[2000:2500], 2049)
    cfg = create_project(root / "proj", mnist=True) / "root_config.json"
    (cfg.parent / "dataset_config.json").write_text(
        json.dumps({"dataset_config": {"data_root": str(data), "batch_size": 100, "val_batch_size": 500}})
    )
    model = json.loads((cfg.parent / "model_config.json").read_text())
    model["model_config"].update(SMALL)
    (cfg.parent / "model_config.json").write_text(json.dumps(model))
    return cfg


def freq(project: Path, name: str, **values: Any) -> str:
    path = project.parent / f"{name}.json"
    path.write_text(json.dumps(values))
    return str(path)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_client(tmp_path_factory.mktemp("home"), num_cpus=3) as c:
        yield c


def _ran_together_on_one_gpu(rows: list[dict[str, Any]]) -> bool:
    """Two trials whose ranks ran at the same time on the same GPU."""
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            same = a["node"] == b["node"] and set(a["gpus"]) & set(b["gpus"])
            start_a, start_b = a["running_at"] or a["started_at"], b["running_at"] or b["started_at"]
            if same and start_a < b["ended_at"] and start_b < a["ended_at"]:
                return True
    return False


def test_a_grid_sweep_shares_cards_succeeds_and_compare_ranks_it(
    client: Any, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {"model_config.lr": "0.003,0.01", "model_config.hidden": "16,32,64"}
    sweep_id = client.sweep(
        str(project), freq_path=freq(project, "one", epochs=1), space=space, memory_mb=6000, name="grid"
    )
    info = client.get_sweep(sweep_id)
    ids = info.record.task_ids
    assert len(ids) == 6 and info.record.varying == ("model_config.lr", "model_config.hidden")
    assert Path(info.record.folder).name.startswith(f"{sweep_id}_grid_")
    done = wait_done(client, ids)
    rows = [done[t] for t in ids]
    assert [r["status"] for r in rows] == ["SUCCEEDED"] * 6, [r["error"] for r in rows]
    assert _ran_together_on_one_gpu(rows), [(r["gpus"], r["running_at"], r["ended_at"]) for r in rows]
    for trial in info.record.trials:
        args = json.loads((Path(trial.package) / layout.ARGS_FILE).read_text())
        assert args["model_config"]["lr"] == trial.values["model_config.lr"]
        assert args["model_config"]["hidden"] == trial.values["model_config.hidden"]

    from dlnest_ray.cli import cluster
    from dlnest_ray.cli.app import main

    monkeypatch.setattr(cluster, "connect_client", lambda address, create: client)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", sweep_id, "--json"])
    assert exit_info.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "acc" and out["goal"] == "max"  # no stop rule: the first metric, by its name
    ranked = out["trials"]
    assert [t["rank"] for t in ranked] == [1, 2, 3, 4, 5, 6]
    bests = [t["best"] for t in ranked]
    assert bests == sorted(bests, reverse=True) and bests[0] > 0.5
    assert {t["task_id"] for t in ranked} == set(ids) and set(ranked[0]["values"]) == set(space)


def test_median_stopping_stops_the_hopeless_trial_only_and_continue_resumes_it(
    client: Any, project: Path
) -> None:
    space = {"model_config.lr": "0.003,0.005,10"}  # lr=10 makes Adam diverge: chance accuracy
    sweep_id = client.sweep(
        str(project),
        freq_path=freq(project, "four", epochs=4),
        space=space,
        memory_mb=4000,
        stop="median:acc:max",
    )
    good_a, good_b, bad = client.get_sweep(sweep_id).record.task_ids
    done = wait_done(client, [good_a, good_b, bad])
    row = done[bad]
    assert row["status"] == "STOPPED", (row["error"], client.get_dlnest_output(0)["lines"][-10:])
    assert row["stop_reason"].startswith("median stopping at epoch ") and row["error"] == row["stop_reason"]
    for t in (good_a, good_b):
        assert done[t]["status"] == "SUCCEEDED" and done[t]["stop_reason"] == "", done[t]
    pkg = SavePackage.open(row["package"])
    segment = pkg.segment_of(bad)
    assert segment is not None and segment.status == "preempted"  # it ended at an epoch boundary...
    finished = segment.finished_epoch
    assert finished is not None and 0 <= finished < 3  # before its last epoch (3)
    assert pkg.latest_valid_id() is not None  # ...with its checkpoint kept
    log = "\n".join(client.get_dlnest_output(0)["lines"])
    assert f"{bad} stopped early by median rule: median stopping" in log
    assert client.get_sweep(sweep_id).record.stops[0].task_id == bad

    again = client.continue_train(row["package"], memory_mb=4000)  # a stopped trial resumes like any run
    resumed = wait_done(client, [again])[again]
    assert resumed["status"] == "SUCCEEDED", resumed["error"]
    assert SavePackage.open(row["package"]).state_dict()["finished_epoch"] == 3


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def test_del_of_a_sweep_leaves_no_trial_running_and_no_process(client: Any, project: Path) -> None:
    space = {"model_config.lr": "0.001,0.002,0.003,0.004,0.005"}  # 3 run (3 CPUs), 2 wait
    sweep_id = client.sweep(
        str(project), freq_path=freq(project, "long", epochs=100), space=space, memory_mb=4000
    )
    ids = client.get_sweep(sweep_id).record.task_ids
    packages = {t: Path(tasks(client)[t]["package"]) for t in ids}

    def pid_files() -> list[Path]:
        return [
            layout.pid_file(packages[t], t, 0) for t in ids if layout.pid_file(packages[t], t, 0).exists()
        ]

    wait_for(lambda: len(pid_files()) >= 2, 120, "two trials' ranks to start")
    pgids = [layout.parse_pid_record(f.read_text())[0] for f in pid_files()]
    said = client.del_task(sweep_id)
    assert said.startswith(f"{sweep_id}: ") and "being stopped" in said
    done = wait_done(client, ids, timeout=90)
    assert {done[t]["status"] for t in ids} == {"CANCELLED"}
    wait_for(lambda: not any(_group_alive(g) for g in pgids), 15, "the trials' processes to be gone")
    assert client.get_sweep(sweep_id).done
    assert {d["reserved_mb"] for d in [d.to_json() for d in client.get_devices_info()]} == {0}
