"""Submitting runs: the package is made at submit time, ids, and refusals that leave nothing behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeLauncher
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack.package import SavePackage

from ._helpers import info, launched, packages, status


def test_package_is_created_at_submit_with_a_code_snapshot(center: Center, project: Path):
    model = project.parent / "Model" / "Model.py"
    original = model.read_text()
    tid = center.run_train(str(project), memory_mb=6000, description="first run")
    pkg = Path(info(center, tid)["package"])
    assert pkg.is_dir() and pkg.parent == project.parent / "Saves"
    assert (pkg / "args.json").is_file() and (pkg / "_package.json").is_file()
    copy = pkg / "Model" / "Model.py"
    assert copy.read_text() == original
    model.write_text(original + "\nEDITED_AFTER_SUBMIT = True\n")
    assert "EDITED_AFTER_SUBMIT" not in copy.read_text()
    args = json.loads((pkg / "args.json").read_text())
    assert Path(args["root_file_path"]) == pkg
    opened = SavePackage.open(pkg)
    assert opened.meta["description"] == "first run"
    assert info(center, tid)["description"] == "first run"
    assert info(center, tid)["name"] == "proj"


def test_pending_task_also_has_its_package(center: Center, project: Path):
    """A queued (not yet running) task has its package and snapshot already."""
    ids = [center.run_train(str(project), memory_mb=15000) for _ in range(3)]
    assert [status(center, t) for t in ids] == ["RUNNING", "RUNNING", "PENDING"]
    pkg = Path(info(center, ids[2])["package"])
    assert (pkg / "args.json").is_file() and (pkg / "Model" / "Model.py").is_file()
    assert len(packages(project)) == 3
    assert len({info(center, t)["package"] for t in ids}) == 3


def test_task_ids_count_up(center: Center, project: Path):
    ids = [center.run_train(str(project), placement="cpu") for _ in range(3)]
    assert ids == ["T_0001", "T_0002", "T_0003"]
    assert all(re.fullmatch(r"T_\d{4}", t) for t in ids)


def test_name_by_desc_names_the_folder(center: Center, project: Path):
    tid = center.run_train(str(project), description="my-run", name_by_desc=True, placement="cpu")
    assert Path(info(center, tid)["package"]).name == "my-run"


def test_no_save_prefix(center: Center, project: Path):
    tid = center.run_train(str(project), no_save=True, placement="cpu")
    assert Path(info(center, tid)["package"]).name.startswith("NOSAVE_")


def test_freq_config_is_merged(center: Center, project: Path, tmp_path: Path):
    freq = tmp_path / "freq.json"
    freq.write_text(json.dumps({"epochs": 7}))
    tid = center.run_train(str(project), freq_path=str(freq), placement="cpu")
    args = json.loads((Path(info(center, tid)["package"]) / "args.json").read_text())
    assert args["epochs"] == 7


def _assert_nothing_created(center: Center, launcher: FakeLauncher, project: Path | None) -> None:
    assert [t.to_row() for t in center.get_task_info(include_finished=True)] == []
    assert launcher.launched == []
    if project is not None:
        assert packages(project) == []


def test_missing_config_file_is_refused(center: Center, launcher: FakeLauncher, tmp_path: Path):
    with pytest.raises(DlnestError, match="not found"):
        center.run_train(str(tmp_path / "nowhere" / "root_config.json"))
    _assert_nothing_created(center, launcher, None)


def test_malformed_json_is_refused(center: Center, launcher: FakeLauncher, project: Path):
    project.write_text('{"save_root": "./Saves", oops')
    with pytest.raises(DlnestError, match=r"root_config\.json"):
        center.run_train(str(project))
    _assert_nothing_created(center, launcher, project)


def test_malformed_child_json_is_refused(center: Center, launcher: FakeLauncher, project: Path):
    (project.parent / "model_config.json").write_text("[1, 2,")
    with pytest.raises(DlnestError, match=r"model_config\.json"):
        center.run_train(str(project))
    _assert_nothing_created(center, launcher, project)


def test_missing_code_file_is_refused(center: Center, launcher: FakeLauncher, project: Path):
    (project.parent / "Dataset" / "Dataset.py").unlink()
    with pytest.raises(DlnestError, match=r"Dataset\.py"):
        center.run_train(str(project), placement="cpu")
    _assert_nothing_created(center, launcher, project)


def test_missing_required_key_is_refused(center: Center, launcher: FakeLauncher, project: Path):
    cfg = json.loads(project.read_text())
    del cfg["save_root"]
    project.write_text(json.dumps(cfg))
    with pytest.raises(DlnestError, match="save_root"):
        center.run_train(str(project))
    _assert_nothing_created(center, launcher, project)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"memory_mb": 20000}, "largest GPU has 16000 MB"),
        ({"memory_mb": 20000, "placement": "gpu"}, "--multi-gpu or --ddp"),
        ({"placement": "ddp", "gpus": 3}, "asks for 3 GPUs but no node has more than 2"),
        ({"placement": "multi", "gpus": 3, "memory_mb": 1000}, "no node has more than 2"),
        ({"placement": "ddp", "memory_mb": 40000}, "needs 40000 MB"),
    ],
)
def test_impossible_request_is_refused_with_reason(
    center: Center, launcher: FakeLauncher, project: Path, kwargs: dict, reason: str
):
    with pytest.raises(DlnestError) as err:
        center.run_train(str(project), **kwargs)
    assert "can never run" in str(err.value)
    assert reason in str(err.value)
    _assert_nothing_created(center, launcher, project)


def test_spreading_makes_a_big_request_feasible(center: Center, launcher: FakeLauncher, project: Path):
    tid = center.run_train(str(project), memory_mb=20000, placement="multi")
    assert launched(launcher) == [(tid, "node-0", (0, 1), 10000)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"placement": "tpu"},
        {"memory_mb": 0},
        {"memory_mb": -5},
        {"placement": "gpu", "gpus": 2},
        {"placement": "cpu", "gpus": 1},
        {"placement": "ddp", "gpus": 0},
        {"name_by_desc": True},  # needs a description
    ],
)
def test_bad_arguments_are_refused(center: Center, launcher: FakeLauncher, project: Path, kwargs: dict):
    with pytest.raises(DlnestError):
        center.run_train(str(project), **kwargs)
    _assert_nothing_created(center, launcher, project)


def test_refused_submit_does_not_use_an_id(center: Center, project: Path):
    with pytest.raises(DlnestError):
        center.run_train(str(project), memory_mb=99999)
    assert center.run_train(str(project), placement="cpu") == "T_0001"


def test_cpu_ignores_memory(center: Center, launcher: FakeLauncher, project: Path):
    tid = center.run_train(str(project), placement="cpu", memory_mb=99999)
    assert launched(launcher) == [(tid, None, (), 0)]
    assert info(center, tid)["memory_mb"] is None


def test_gpu_only_node_less_cluster_refuses_gpu_but_takes_cpu(
    make_center, launcher: FakeLauncher, project: Path
):
    from dlnest_ray.actors.ports import FakeDevices
    from dlnest_ray.devices import FakeProbe

    center = make_center(devices=FakeDevices(probe=FakeProbe(count=0, total_mb=1000)))
    with pytest.raises(DlnestError, match="--cpu"):
        center.run_train(str(project))
    assert packages(project) == []
    tid = center.run_train(str(project), placement="cpu")
    assert status(center, tid) == "RUNNING"


def test_name_by_desc_refuses_bad_and_taken_names(center: Center, launcher: FakeLauncher, project: Path):
    with pytest.raises(DlnestError, match="invalid package name"):
        center.run_train(str(project), description="../escape", name_by_desc=True, placement="cpu")
    _assert_nothing_created(center, launcher, project)
    first = center.run_train(str(project), description="same", name_by_desc=True, placement="cpu")
    with pytest.raises(DlnestError, match="already exists"):
        center.run_train(str(project), description="same", name_by_desc=True, placement="cpu")
    assert [t["task_id"] for t in [t.to_row() for t in center.get_task_info(include_finished=True)]] == [
        first
    ]
    assert [p.name for p in packages(project)] == ["same"]
    assert center.run_train(str(project), placement="cpu") == "T_0002"
