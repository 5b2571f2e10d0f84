"""Laying values over a package's merged config before it is created (a sweep trial's values, issue 15),
creating it in another folder (a sweep's), and checking a config without creating anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlnest_ray.errors import ConfigError, DlnestError, PackageError
from dlnest_ray.savepack.create import claim_folder
from dlnest_ray.savepack.package import SavePackage

from .test_package_edges import _project


def test_overrides_reach_args_json_and_leave_the_rest(tmp_path: Path) -> None:
    config = _project(tmp_path / "proj", [])
    pkg = SavePackage(config)
    pkg.override({"model_config.lr": 0.01, "checkpoint_args.max_ckpt_in_fast_track": 3, "tag": [1, 2]})
    path = pkg.save_to_new_dir()
    args = json.loads((path / "args.json").read_text())
    assert args["model_config"] == {"lr": 0.01} and args["tag"] == [1, 2]
    assert args["checkpoint_args"]["max_ckpt_in_fast_track"] == 3
    assert args["model_name"] == "Model"  # the merged config otherwise as it was
    with pytest.raises(PackageError, match="exists already"):
        pkg.override({"x": 1})  # the package is made: its config no longer changes


def test_an_override_below_a_value_that_is_not_a_dict_changes_nothing(tmp_path: Path) -> None:
    pkg = SavePackage(_project(tmp_path / "proj", []))
    before = json.dumps(pkg.args, sort_keys=True)
    with pytest.raises(DlnestError, match="'model_name' holds Model"):
        pkg.override({"model_name.x": 1})
    assert json.dumps(pkg.args, sort_keys=True) == before


def test_a_package_in_a_sweep_folder_copies_neither_folder(tmp_path: Path) -> None:
    config = _project(tmp_path / "proj", ["."])  # the project folder itself is listed as code
    saves = tmp_path / "proj" / "Saves"
    SavePackage(config).save_to_new_dir()  # a package already in the save root
    folder = claim_folder(saves, "S_0001_")
    assert folder.parent == saves and folder.name.startswith("S_0001_")
    trial = SavePackage(config).save_to_new_dir("trial_01", parent=folder)
    assert trial == folder / "trial_01" and (trial / "Model" / "Model.py").is_file()
    assert not (trial / "Saves").exists() and not (trial / folder.name).exists()
    assert json.loads((trial / "args.json").read_text())["save_root"] == str(folder)


def test_check_layout_creates_nothing(tmp_path: Path) -> None:
    config = _project(tmp_path / "proj", [])
    assert SavePackage(config).check_layout() == tmp_path / "proj" / "Saves"
    assert not (tmp_path / "proj" / "Saves").exists()
    (tmp_path / "proj" / "LifeCycle.py").unlink()
    with pytest.raises(ConfigError, match=r"LifeCycle\.py"):
        SavePackage(config).check_layout()
    assert not (tmp_path / "proj" / "Saves").exists()
