"""Edge cases found in review: self-copying save roots, torn DLNest checkpoints, temp files, merge sharing."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dlnest_ray.config import merge
from dlnest_ray.savepack.package import SavePackage

from ._helpers import ckpt_args, new_package


def _project(root: Path, other: list[str]) -> Path:
    (root / "Model").mkdir(parents=True)
    for f in ("Model/Model.py", "Dataset.py", "LifeCycle.py"):
        (root / f).write_text("# code\n")
    cfg = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "checkpoint_args": ckpt_args(),
        "root_file_path": ".",
        "model_file_path": "./Model/Model.py",
        "dataset_file_path": "./Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "other_file_paths": other,
    }
    (root / "root_config.json").write_text(json.dumps(cfg))
    return root / "root_config.json"


def test_listing_the_project_folder_does_not_copy_packages_into_the_package(tmp_path: Path) -> None:
    config = _project(tmp_path / "proj", ["."])
    first = SavePackage(config).save_to_new_dir()
    second = SavePackage(config).save_to_new_dir()
    assert (second / "Model" / "Model.py").is_file()  # the project's code came along
    assert not (second / "Saves").exists()  # but not the save root with the first package
    assert first.is_dir() and (first / "_package.json").is_file()


def test_torn_unhashed_dlnest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "old"
    (path / "Checkpoints").mkdir(parents=True)
    (path / "args.json").write_text(json.dumps({"save_root": str(tmp_path), "checkpoint_args": ckpt_args()}))
    (path / "_package.json").write_text(
        json.dumps({"prefix": "state_", "ckpt_fast": [0, 1], "ckpt_slow": [], "ckpt_consistent": []})
    )
    torch.save({"id": 0}, path / "Checkpoints" / "state_0.ckpt")
    torch.save({"id": 1, "w": torch.ones(1000)}, path / "Checkpoints" / "state_1.ckpt")
    data = (path / "Checkpoints" / "state_1.ckpt").read_bytes()
    (path / "Checkpoints" / "state_1.ckpt").write_bytes(data[: len(data) // 2])  # DLNest killed mid-save
    assert SavePackage.open(path).state_dict() == {"id": 0}


def test_remove_temp_files_also_cleans_the_package_root(tmp_path: Path) -> None:
    pkg = new_package(tmp_path)
    assert pkg.path is not None
    torn = pkg.path / "._package.json.tmp-0badf00d"
    torn.write_text("{")
    pkg.remove_temp_files()
    assert not torn.exists()
    assert json.loads((pkg.path / "_package.json").read_text())["version"] == 1


def test_merge_result_shares_nothing_with_its_inputs() -> None:
    base = {"a": {"b": {"c": 1}}, "lst": [1, 2]}
    overlay = {"n": {"deep": [3]}, "a": {"x": 1}}
    out = merge(base, overlay)
    out["a"]["b"]["c"] = 99
    out["lst"].append(3)
    out["n"]["deep"].append(4)
    assert base == {"a": {"b": {"c": 1}}, "lst": [1, 2]}
    assert overlay == {"n": {"deep": [3]}, "a": {"x": 1}}
