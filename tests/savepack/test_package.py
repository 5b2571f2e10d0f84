"""Save packages: creation, naming, code/config snapshot, manifest, loading safety and the standalone API."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dlnest_ray.savepack.package as package_mod
from dlnest_ray.config import load_config, resolve_layout
from dlnest_ray.errors import CheckpointError, ConfigError, DlnestError, PackageError
from dlnest_ray.savepack import create as create_mod
from dlnest_ray.savepack.create import validate_name
from dlnest_ray.savepack.package import SavePackage

from ._helpers import (
    PACKAGE_NAME_RE,
    ckpt_args,
    ids_on_disk,
    listing,
    new_package,
    plain_args,
    read_manifest,
    temp_files,
)

CODE_FILES = {
    "Model/Model.py": "class Model: pass\n",
    "Model/Network.py": "NET = 1\n",
    "Dataset/Dataset.py": "class Dataset: pass\n",
    "LifeCycle.py": "class LifeCycle: pass\n",
}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def make_project(root: Path, **extra: Any) -> Path:
    """A DLNest-style project; returns its root_config.json."""
    for rel, text in CODE_FILES.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    cfg: dict[str, Any] = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "checkpoint_args": ckpt_args(fast=2, slow=2, dilation=3, consistent=1),
        "root_file_path": ".",
        "model_file_path": "./Model/Model.py",
        "dataset_file_path": "./Dataset/Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "other_file_paths": ["./Model/Network.py"],
        "child_jsons": ["./common_config.json", "./configs/model_config.json"],
    }
    cfg.update(extra)
    write_json(root / "common_config.json", {"epochs": 3, "child_jsons": ["deep.json"]})
    write_json(root / "deep.json", {"deep": True})
    write_json(root / "configs" / "model_config.json", {"model_config": {"hidden": 8, "lr": 0.1}})
    return write_json(root / "root_config.json", cfg)


def package_dirs(save_root: Path) -> list[Path]:
    return sorted(p for p in save_root.iterdir() if p.is_dir()) if save_root.exists() else []


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


# ----------------------------------------------------------------------------------------- naming


def test_timestamp_name_and_layout(project: Path) -> None:
    pkg = SavePackage(project)
    path = pkg.save_to_new_dir()
    assert path.parent == (project.parent / "Saves").resolve()
    assert PACKAGE_NAME_RE.match(path.name), path.name
    assert pkg.path == path
    assert (path / "Checkpoints").is_dir()
    assert (path / "args.json").is_file() and (path / "_package.json").is_file()
    assert ids_on_disk(path) == set()


def test_many_packages_in_one_second_are_distinct(tmp_path: Path) -> None:
    save_root = tmp_path / "Saves"
    paths = []
    for k in range(40):
        pkg = new_package(save_root)
        assert pkg.path is not None
        (pkg.path / "marker.txt").write_text(str(k))
        paths.append(pkg.path)
    assert len(set(paths)) == 40
    assert package_dirs(save_root) == sorted(paths)
    for k, p in enumerate(paths):
        assert PACKAGE_NAME_RE.match(p.name)
        assert (p / "marker.txt").read_text() == str(k)  # never reused or emptied


class FixedClock:
    """Pins the timestamp and the 3-digit suffix to force name clashes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, suffixes: list[int]) -> None:
        self.suffixes = list(suffixes)
        self.stamp = time.localtime()
        monkeypatch.setattr(create_mod, "_timestamp_name", self.name)

    def name(self, prefix: str) -> str:
        n = self.suffixes.pop(0) if len(self.suffixes) > 1 else self.suffixes[0]
        return prefix + time.strftime("%Y-%m-%d_%H-%M-%S", self.stamp) + f"_{n:03d}"


def test_existing_timestamp_folder_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FixedClock(monkeypatch, [7, 7, 8])
    save_root = tmp_path / "Saves"
    first = new_package(save_root)
    assert first.path is not None
    first.save_checkpoint({"v": 1})
    before = listing(first.path)
    second = new_package(save_root)
    assert second.path is not None
    assert first.path.name.endswith("_007") and second.path.name.endswith("_008")
    assert listing(first.path) == before
    assert clock.suffixes == [8]


def test_no_free_name_is_an_error_not_an_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FixedClock(monkeypatch, [5])
    save_root = tmp_path / "Saves"
    first = new_package(save_root)
    assert first.path is not None
    before = listing(save_root)
    with pytest.raises(PackageError):
        new_package(save_root)
    assert listing(save_root) == before


def test_override_name(project: Path) -> None:
    path = SavePackage(project).save_to_new_dir(override_name="my run 1", description="my run 1")
    assert path.name == "my run 1"
    assert read_manifest(path)["description"] == "my run 1"


def test_override_name_clash_is_refused_and_keeps_existing(project: Path) -> None:
    first = SavePackage(project)
    path = first.save_to_new_dir(override_name="exp")
    first.save_checkpoint({"w": torch.ones(2)})
    (path / "notes.txt").write_text("keep me")
    before = listing(path.parent)
    with pytest.raises(PackageError, match="exp"):
        SavePackage(project).save_to_new_dir(override_name="exp")
    assert listing(path.parent) == before


def test_no_save_names_and_keeps_previous(project: Path) -> None:
    first = SavePackage(project).save_to_new_dir(no_save=True)
    (first / "keep.txt").write_text("first")
    second = SavePackage(project).save_to_new_dir(no_save=True)
    assert first != second
    for p in (first, second):
        assert p.name.startswith("NOSAVE_")
        assert PACKAGE_NAME_RE.match(p.name.removeprefix("NOSAVE_"))
    assert (first / "keep.txt").read_text() == "first"
    assert (first / "_package.json").is_file()


def test_name_by_desc_dotdot_x_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    """Required: ``--name-by-desc ../x`` must not touch a sibling ``x`` of save_root."""
    project = make_project(tmp_path / "proj")
    save_root = tmp_path / "proj" / "Saves"
    save_root.mkdir()
    (save_root / "old_run").mkdir()
    (save_root / "old_run" / "a.txt").write_text("old")
    sibling = tmp_path / "proj" / "x"
    sibling.mkdir()
    (sibling / "precious.txt").write_text("do not delete")
    before = listing(tmp_path)
    with pytest.raises(PackageError):
        SavePackage(project).save_to_new_dir(override_name="../x", description="../x")
    assert (sibling / "precious.txt").read_text() == "do not delete"
    assert listing(tmp_path) == before  # nothing created, nothing deleted


@pytest.mark.parametrize(
    "bad", ["../x", "/abs/path", "a/b", "..", ".", ".hidden", "a\\b", " padded ", "x" * 201]
)
def test_invalid_override_names_refused(tmp_path: Path, bad: str) -> None:
    project = make_project(tmp_path / "proj")
    (tmp_path / "proj" / "Saves").mkdir()
    before = listing(tmp_path)
    with pytest.raises(PackageError):
        SavePackage(project).save_to_new_dir(override_name=bad)
    assert listing(tmp_path) == before
    assert not Path("/abs/path").exists()


def test_invalid_name_creates_no_save_root(tmp_path: Path) -> None:
    """A refused name must be refused before anything is created (save_root does not exist yet)."""
    project = make_project(tmp_path / "proj")
    before = listing(tmp_path)
    with pytest.raises(PackageError):
        SavePackage(project).save_to_new_dir(override_name="../x")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("bad", ["", "..", ".", ".git", "a/b", "/abs", "../x"])
def test_validate_name_rejects(bad: str) -> None:
    with pytest.raises(PackageError):
        validate_name(bad)


def test_validate_name_accepts_plain() -> None:
    assert validate_name("run-1_final.v2") == "run-1_final.v2"


def test_empty_override_name_means_timestamp(project: Path) -> None:
    path = SavePackage(project).save_to_new_dir(override_name="")
    assert PACKAGE_NAME_RE.match(path.name)


def test_second_save_to_new_dir_refused(project: Path) -> None:
    pkg = SavePackage(project)
    pkg.save_to_new_dir()
    with pytest.raises(PackageError):
        pkg.save_to_new_dir()
    assert len(package_dirs(project.parent / "Saves")) == 1


# ------------------------------------------------------------------------------ snapshot of code and configs


def test_code_and_configs_are_copied(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    write_json(tmp_path / "tune" / "freq.json", {"epochs": 7, "child_jsons": ["fchild.json"]})
    write_json(tmp_path / "tune" / "fchild.json", {"model_config": {"lr": 0.5}})
    pkg = SavePackage(config_path=str(project), freq_path=str(tmp_path / "tune" / "freq.json"))
    path = pkg.save_to_new_dir(description="desc here")
    for rel, text in CODE_FILES.items():
        assert (path / rel).read_text() == text
    # configs: root, children (keeping their place) and the freq file with its child
    configs = path / "_configs"
    assert json.loads((configs / "root_config.json").read_text())["child_jsons"]
    assert json.loads((configs / "common_config.json").read_text()) == {
        "epochs": 3,
        "child_jsons": ["deep.json"],
    }
    assert json.loads((configs / "deep.json").read_text()) == {"deep": True}
    assert (configs / "configs" / "model_config.json").is_file()
    man = read_manifest(path)
    assert man["freq_config"] is not None
    assert json.loads((path / man["freq_config"]).read_text())["epochs"] == 7
    copies = [c["copy"] for c in man["config_files"]]
    assert len(copies) == 6
    assert all((path / c).is_file() for c in copies)
    # args.json: merged, no child_jsons, root_file_path is the package, save_root absolute
    args = json.loads((path / "args.json").read_text())
    assert "child_jsons" not in args
    assert args["epochs"] == 7 and args["deep"] is True
    assert args["model_config"] == {"hidden": 8, "lr": 0.5}
    assert Path(args["root_file_path"]) == path
    assert Path(args["save_root"]).is_absolute() and Path(args["save_root"]) == path.parent
    # the code paths in args.json resolve to the copies inside the package
    layout = resolve_layout(args, path, source="args.json")
    assert all(str(f).startswith(str(path)) for f in layout.code_files)
    assert pkg.args == args


def test_absolute_other_file_goes_to_package_root(tmp_path: Path) -> None:
    ext_file = tmp_path / "elsewhere" / "helpers.py"
    ext_file.parent.mkdir()
    ext_file.write_text("HELP = 1\n")
    ext_dir = tmp_path / "elsewhere" / "pkgdir"
    (ext_dir / "__pycache__").mkdir(parents=True)
    (ext_dir / "mod.py").write_text("X = 1\n")
    (ext_dir / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    project = make_project(
        tmp_path / "proj", other_file_paths=["./Model/Network.py", str(ext_file), str(ext_dir), "./Dataset"]
    )
    path = SavePackage(project).save_to_new_dir()
    assert (path / "helpers.py").read_text() == "HELP = 1\n"
    assert (path / "pkgdir" / "mod.py").read_text() == "X = 1\n"
    assert not (path / "pkgdir" / "__pycache__").exists()
    args = json.loads((path / "args.json").read_text())
    others = args["other_file_paths"]
    assert len(others) == 4
    assert (path / others[1]).resolve() == (path / "helpers.py").resolve()
    assert (path / others[2]).resolve() == (path / "pkgdir").resolve()
    assert (path / others[0]).resolve() == (path / "Model" / "Network.py").resolve()
    assert (path / others[3] / "Dataset.py").is_file()


def test_code_path_escaping_project_is_refused_without_leftovers(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("BAD = 1\n")
    project = make_project(tmp_path / "proj", other_file_paths=["../outside.py"])
    with pytest.raises(PackageError, match="outside"):
        SavePackage(project).save_to_new_dir()
    assert package_dirs(tmp_path / "proj" / "Saves") == []


def test_missing_code_file_is_config_error_and_no_folder(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    (tmp_path / "proj" / "LifeCycle.py").unlink()
    with pytest.raises(ConfigError, match=r"LifeCycle\.py"):
        SavePackage(project).save_to_new_dir()
    assert package_dirs(tmp_path / "proj" / "Saves") == []


def test_config_copies_keep_their_relative_place(project: Path) -> None:
    """The root config copied into _configs/ still finds its (in-project) children there."""
    pkg = SavePackage(project)
    path = pkg.save_to_new_dir()
    reloaded = load_config(path / "_configs" / "root_config.json").args
    original = load_config(project).args
    assert reloaded == original
    assert reloaded["model_config"] == {"hidden": 8, "lr": 0.1} and reloaded["deep"] is True


def test_runner_aliases_are_copied(tmp_path: Path) -> None:
    cfg = json.loads(make_project(tmp_path / "proj").read_text())
    cfg["runner_name"] = cfg.pop("model_name")
    cfg["runner_file_path"] = cfg.pop("model_file_path")
    project = write_json(tmp_path / "proj" / "root_config.json", cfg)
    path = SavePackage(project).save_to_new_dir()
    args = json.loads((path / "args.json").read_text())
    assert (path / args["runner_file_path"]).read_text() == CODE_FILES["Model/Model.py"]


def test_root_file_path_relative_to_root_config(tmp_path: Path) -> None:
    """The config lives in cfg/, the code in proj/: root_file_path '../proj' is relative to cfg/."""
    make_project(tmp_path / "proj")
    cfg = json.loads((tmp_path / "proj" / "root_config.json").read_text())
    cfg["root_file_path"] = "../proj"
    cfg["child_jsons"] = []
    root = write_json(tmp_path / "cfg" / "root_config.json", cfg)
    path = SavePackage(root).save_to_new_dir()
    assert path.parent == (tmp_path / "proj" / "Saves").resolve()
    assert (path / "LifeCycle.py").is_file()
    assert read_manifest(path)["source_project"] == str((tmp_path / "proj").resolve())


# ----------------------------------------------------------------------------------------- manifest metadata


def test_manifest_contents(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.parent.parent))  # never look above tmp
    path = SavePackage(project).save_to_new_dir(description="first try")
    man = read_manifest(path)
    assert isinstance(man["version"], int) and man["version"] >= 1
    assert man["prefix"] == "state_"
    assert man["ckpt_fast"] == man["ckpt_slow"] == man["ckpt_consistent"] == []
    assert man["checkpoints"] == {}
    assert man["description"] == "first try"
    assert man["source_project"] == str(project.parent.resolve())
    assert isinstance(man["seed"], int)
    assert man["segments"] == []
    assert man["versions"]["torch"] == torch.__version__
    assert man["versions"]["python"] == platform.python_version()
    assert isinstance(man["versions"]["dlnest_ray"], str)
    assert man["git"] is None  # the tmp project is not a git repository
    assert SavePackage.open(path).seed == man["seed"]


def test_seed_from_config(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", seed=1234)
    path = SavePackage(project).save_to_new_dir()
    assert read_manifest(path)["seed"] == 1234
    assert SavePackage.open(path).seed == 1234


def test_random_seed_is_recorded_and_varies(tmp_path: Path) -> None:
    seeds = set()
    for _ in range(5):
        pkg = new_package(tmp_path / "Saves")
        assert pkg.path is not None and pkg.seed is not None
        assert read_manifest(pkg.path)["seed"] == pkg.seed
        seeds.add(pkg.seed)
    assert len(seeds) > 1


def test_git_commit_recorded(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    git = [
        "git",
        "-C",
        str(project.parent),
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "-c",
        "commit.gpgsign=false",
    ]
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True, env=env)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = SavePackage(project).save_to_new_dir()
    info = read_manifest(path)["git"]
    assert info is not None
    assert info["commit"] == head


def test_checkpoint_manifest_records(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=3)
    assert pkg.path is not None
    pkg.save_checkpoint({"w": torch.arange(4)}, epoch=2, step=40)
    rec = read_manifest(pkg.path)["checkpoints"]["0"]
    f = pkg.path / "Checkpoints" / "state_0.ckpt"
    assert rec["epoch"] == 2 and rec["step"] == 40
    assert rec["bytes"] == f.stat().st_size
    assert rec["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert abs(rec["time"] - time.time()) < 3600


# ----------------------------------------------------------------------------------------- loading safety


def saved_package(tmp_path: Path, n: int = 3, **limits: int) -> SavePackage:
    pkg = new_package(tmp_path / "Saves", **({"fast": 5} | limits))
    for k in range(n):
        pkg.save_checkpoint({"id": k, "w": torch.full((16,), float(k))})
    return pkg


def test_truncated_latest_falls_back(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path)
    f = pkg.ckpt_path(2)
    f.write_bytes(f.read_bytes()[:-10])
    reopened = SavePackage.open(pkg.path)  # type: ignore[arg-type]
    assert reopened.latest_valid_id() == 1
    assert reopened.state_dict()["id"] == 1
    with pytest.raises(CheckpointError, match=r"checkpoint 2 .*damaged"):
        reopened.state_dict(2)


def test_flipped_bytes_latest_falls_back(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path)
    f = pkg.ckpt_path(2)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert pkg.latest_valid_id() == 1
    assert pkg.state_dict()["id"] == 1
    with pytest.raises(CheckpointError):
        pkg.state_dict(2)


def test_missing_latest_falls_back(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path)
    pkg.ckpt_path(2).unlink()
    pkg.ckpt_path(1).write_bytes(b"")
    assert pkg.state_dict()["id"] == 0


def test_stray_file_not_in_manifest_never_loaded(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path)
    torch.save({"id": 99}, pkg.ckpt_path(99))
    reopened = SavePackage.open(pkg.path)  # type: ignore[arg-type]
    assert reopened.latest_valid_id() == 2
    assert reopened.state_dict()["id"] == 2
    with pytest.raises(CheckpointError, match=r"checkpoint 99 is not kept"):
        reopened.state_dict(99)


def test_no_valid_checkpoint(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.latest_valid_id() is None
    with pytest.raises(CheckpointError):
        pkg.state_dict()
    pkg.save_checkpoint({"id": 0})
    pkg.ckpt_path(0).write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        pkg.state_dict()


def test_explicit_id_not_kept(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=4, fast=1, slow=0, dilation=1, consistent=0)
    assert ids_on_disk(pkg.path) == {3}  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="not kept"):
        pkg.state_dict(1)
    with pytest.raises(CheckpointError):
        pkg.state_dict(17)
    assert pkg.state_dict(3)["id"] == 3


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=2)
    assert pkg.path is not None
    manifest_before = read_manifest(pkg.path)
    with pytest.raises(CheckpointError):
        pkg.save_checkpoint({"bad": lambda: 1})  # not picklable
    assert read_manifest(pkg.path) == manifest_before
    assert temp_files(pkg.path) == []
    assert ids_on_disk(pkg.path) == {0, 1}
    assert pkg.state_dict()["id"] == 1
    assert pkg.save_checkpoint({"id": 2}) == 2
    assert pkg.state_dict()["id"] == 2


def test_failed_async_write_reported_at_flush(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=1)
    pkg.save_checkpoint({"bad": lambda: 1}, wait=False)
    with pytest.raises(CheckpointError):
        pkg.flush()
    assert pkg.state_dict()["id"] == 0
    assert pkg.save_checkpoint({"id": 1}) == 1


# ----------------------------------------------------------------------------------------- set_ckpt_id


def test_set_ckpt_id_drops_newer_and_stray(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=5, fast=5)
    assert pkg.path is not None
    torch.save({"id": "stray"}, pkg.ckpt_path(9))
    torch.save({"id": "stray"}, pkg.ckpt_path(1).with_name("other_7.ckpt"))
    pkg.set_ckpt_id(2)
    assert ids_on_disk(pkg.path) == {0, 1}
    assert (pkg.ckpt_dir / "other_7.ckpt").exists()  # not ours: another prefix
    man = read_manifest(pkg.path)
    assert sorted(man["checkpoints"]) == ["0", "1"]
    assert man["ckpt_fast"] == [0, 1]
    assert man["next_ckpt_id"] == 2
    # a default resume from a fresh open cannot see the abandoned branch
    reopened = SavePackage.open(pkg.path)
    assert reopened.latest_valid_id() == 1
    assert reopened.save_checkpoint({"id": "2b"}) == 2
    assert reopened.state_dict()["id"] == "2b"
    assert reopened.save_checkpoint({"id": "3b"}) == 3


def test_set_ckpt_id_next_save_gets_id(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=4, fast=2, slow=1, dilation=2, consistent=0)
    assert set(pkg.tracks.held()) == {2, 3}
    pkg.set_ckpt_id(3)
    assert pkg.save_checkpoint({"id": "new3"}) == 3
    assert pkg.state_dict()["id"] == "new3"
    assert pkg.state_dict(2)["id"] == 2


def test_set_ckpt_id_after_async_save(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=2)
    pkg.save_checkpoint({"id": 2}, wait=False)
    pkg.set_ckpt_id(1)
    assert ids_on_disk(pkg.path) == {0}  # type: ignore[arg-type]
    assert pkg.state_dict()["id"] == 0


# ----------------------------------------------------------------------------------------- async snapshot


def test_async_save_snapshots_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = new_package(tmp_path / "Saves")
    gate = threading.Event()
    real_write = package_mod.write_file

    def gated_write(path: Path, state: Any) -> tuple[int, str]:
        assert gate.wait(30)
        return real_write(path, state)

    monkeypatch.setattr(package_mod, "write_file", gated_write)
    weight = torch.zeros(4)
    nested = [1.0, [2.0, 3.0]]
    rng = np.arange(3)
    state = {
        "rng": rng,
        "model": collections.OrderedDict(weight=weight),
        "log": {"loss": [0.5, 0.4], "nested": nested, "acc": torch.tensor([0.9])},
        "epoch": 1,
    }
    assert pkg.save_checkpoint(state, wait=False) == 0
    # training goes on and changes everything in place before the write happens
    weight.add_(7)
    state["log"]["loss"].append(0.1)
    nested[1].append(99.0)
    state["log"]["acc"][0] = 0.0
    state["model"]["extra"] = torch.ones(1)
    state["epoch"] = 2
    rng[:] = -1
    gate.set()
    pkg.flush()
    loaded = pkg.state_dict()
    assert torch.equal(loaded["model"]["weight"], torch.zeros(4))
    assert list(loaded["model"]) == ["weight"]
    assert isinstance(loaded["model"], collections.OrderedDict)
    assert loaded["log"]["loss"] == [0.5, 0.4]
    assert loaded["log"]["nested"] == [1.0, [2.0, 3.0]]
    assert torch.equal(loaded["log"]["acc"], torch.tensor([0.9]))
    assert loaded["epoch"] == 1
    assert loaded["rng"].tolist() == [0, 1, 2]


def test_async_saves_in_a_row(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=3, slow=0)
    t = torch.zeros(2)
    for k in range(5):
        t.fill_(k)
        pkg.save_checkpoint({"t": t}, wait=False)
    pkg.flush()
    assert ids_on_disk(pkg.path) == {2, 3, 4}  # type: ignore[arg-type]
    for k in (2, 3, 4):
        assert torch.equal(pkg.state_dict(k)["t"], torch.full((2,), float(k)))


# ----------------------------------------------------------------------------------------- standalone API


def test_standalone_give_args(tmp_path: Path) -> None:
    pkg = SavePackage()
    pkg.give_args(plain_args(tmp_path / "Saves", fast=2) | {"lr": 0.1, "child_jsons": ["x.json"]})
    path = pkg.save_to_new_dir(copy_files=False)
    args = json.loads((path / "args.json").read_text())
    assert args["lr"] == 0.1 and "child_jsons" not in args
    assert pkg.save_checkpoint({"a": 1}) == 0
    assert pkg.save_checkpoint({"a": 2}, hold=True) == 1
    assert SavePackage.open(path).state_dict() == {"a": 2}
    assert SavePackage.open(str(path)).state_dict(0, device="cpu") == {"a": 1}
    assert SavePackage.open(path).state_dict(id=1) == {"a": 2}


def test_standalone_give_args_relative_save_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pkg = SavePackage()
    pkg.give_args({"save_root": "./rel_saves", "checkpoint_args": ckpt_args()})
    path = pkg.save_to_new_dir(copy_files=False)
    assert path.parent == (tmp_path / "rel_saves").resolve()


def test_give_args_without_checkpoint_args(tmp_path: Path) -> None:
    pkg = SavePackage()
    pkg.give_args({"save_root": str(tmp_path / "Saves")})
    with pytest.raises(ConfigError):
        pkg.save_to_new_dir(copy_files=False)
    assert not (tmp_path / "Saves").exists() or package_dirs(tmp_path / "Saves") == []


def test_save_without_folder_refused() -> None:
    pkg = SavePackage()
    with pytest.raises(PackageError):
        pkg.save_checkpoint({"a": 1})


def test_camel_case_aliases(tmp_path: Path) -> None:
    pkg = SavePackage()
    pkg.giveArgs(plain_args(tmp_path / "Saves", fast=3, slow=0, dilation=1, consistent=1))
    path = pkg.saveToNewDir("", False)
    assert pkg.saveACheckpoint({"v": 0}) == 0
    assert pkg.saveACheckpoint({"v": 1}, holdThisCheckpoint=True) == 1
    assert pkg.saveACheckpoint({"v": 2}) == 2
    assert read_manifest(path)["ckpt_consistent"] == [1]
    assert pkg.getStateDict() == {"v": 2}
    assert pkg.getStateDict(1) == {"v": 1}
    other = SavePackage()
    other.initFromAnExistSavePackage(path)
    assert other.path == path
    assert other.getStateDict() == {"v": 2}
    other.setCkptID(1)
    assert other.saveACheckpoint({"v": "1b"}) == 1
    assert other.getStateDict() == {"v": "1b"}
    with other.getOutputFile() as f:
        f.write("hello\n")
    with other.getOutputFile(rank=2) as f:
        f.write("rank2\n")
    assert (path / "_output.txt").read_text() == "hello\n"
    assert (path / "_output_2.txt").read_text() == "rank2\n"


def test_output_file_appends(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    with pkg.output_file() as f:
        f.write("one\n")
    with SavePackage.open(pkg.path).output_file() as f:
        f.write("two\n")
    with pkg.output_file(rank=0) as f:
        f.write("r0\n")
    with pkg.output_file(rank=0) as f:
        f.write("r0 again\n")
    assert (pkg.path / "_output.txt").read_text() == "one\ntwo\n"
    assert (pkg.path / "_output_0.txt").read_text() == "r0\nr0 again\n"


def test_open_non_package(tmp_path: Path) -> None:
    folder = tmp_path / "not_a_package"
    folder.mkdir()
    (folder / "args.json").write_text("{}")
    with pytest.raises(PackageError) as ei:
        SavePackage.open(folder)
    assert str(folder) in str(ei.value)
    assert isinstance(ei.value, DlnestError)
    with pytest.raises(PackageError, match="missing_folder"):
        SavePackage.open(tmp_path / "missing_folder")


def test_open_moved_package(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=2)
    assert pkg.path is not None
    moved = tmp_path / "moved_here"
    pkg.path.rename(moved)
    reopened = SavePackage.open(moved)
    assert reopened.args["root_file_path"] == str(moved.resolve())
    assert reopened.state_dict()["id"] == 1


def test_dlnest_made_package_opens(tmp_path: Path) -> None:
    path = tmp_path / "Saves" / "2021-01-01_00-00-00_123"
    (path / "Checkpoints").mkdir(parents=True)
    args = {
        "save_root": str(tmp_path / "Saves"),
        "root_file_path": str(path),
        "model_name": "Model",
        "checkpoint_args": ckpt_args(fast=2, slow=1, dilation=4, consistent=1),
    }
    write_json(path / "args.json", args)
    write_json(
        path / "_package.json",
        {"prefix": "state_", "ckpt_slow": [4], "ckpt_fast": [5, 6], "ckpt_consistent": [2]},
    )
    for k in (2, 4, 5, 6):
        torch.save({"id": k}, path / "Checkpoints" / f"state_{k}.ckpt")
    pkg = SavePackage.open(path)
    assert pkg.state_dict() == {"id": 6}
    assert pkg.latest_valid_id() == 6
    assert pkg.state_dict(2) == {"id": 2}
    assert set(pkg.tracks.held()) == {2, 4, 5, 6}
    # a further save continues the numbering and keeps DLNest's tracks
    assert pkg.save_checkpoint({"id": 7}) == 7
    man = read_manifest(path)
    assert man["ckpt_fast"] == [6, 7]
    assert ids_on_disk(path) == {2, 4, 6, 7}
    assert SavePackage.open(path).state_dict() == {"id": 7}


def test_dlnest_package_with_missing_tracked_file(tmp_path: Path) -> None:
    path = tmp_path / "old"
    (path / "Checkpoints").mkdir(parents=True)
    write_json(path / "args.json", {"save_root": str(tmp_path), "checkpoint_args": ckpt_args(fast=2)})
    write_json(
        path / "_package.json",
        {"prefix": "state_", "ckpt_slow": [], "ckpt_fast": [3, 4], "ckpt_consistent": []},
    )
    torch.save({"id": 3}, path / "Checkpoints" / "state_3.ckpt")
    assert SavePackage.open(path).state_dict() == {"id": 3}


def test_remove_temp_files(tmp_path: Path) -> None:
    pkg = saved_package(tmp_path, n=1)
    assert pkg.path is not None
    junk = pkg.ckpt_dir / ".state_1.ckpt.tmp-deadbeef"
    junk.write_bytes(b"partial")
    pkg.remove_temp_files()
    assert temp_files(pkg.path) == []
    assert ids_on_disk(pkg.path) == {0}


STANDALONE_SCRIPT = """
import sys
from pathlib import Path
import torch
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.savepack.metrics import MetricsLog
save_root = Path(sys.argv[1])
pkg = SavePackage()
pkg.give_args({"save_root": str(save_root), "checkpoint_args": {"max_ckpt_in_fast_track": 1,
    "max_ckpt_in_slow_track": 0, "dilation_in_slow_track": 1, "max_ckpt_in_consistent_track": 0}})
path = pkg.save_to_new_dir(copy_files=False)
pkg.save_checkpoint({"w": torch.ones(2)})
MetricsLog(path).append(epoch=0, step=1, wall_time=0.0, log={"loss": 1.0})
assert torch.equal(SavePackage.open(path).state_dict()["w"], torch.ones(2))
assert not torch.cuda.is_available()
print("RAY_IMPORTED" if "ray" in sys.modules else "NO_RAY")
"""


def test_standalone_without_ray_or_gpu(tmp_path: Path, repo_root: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(repo_root)}
    out = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT, str(tmp_path / "Saves")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "NO_RAY"
    (path,) = package_dirs(tmp_path / "Saves")
    assert ids_on_disk(path) == {0}
