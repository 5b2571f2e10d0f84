"""``dlnest_ray.analyze``: run a function against a package's model, dataset and log, read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import dlnest_ray
from dlnest_ray import SavePackage, UserCodeError
from dlnest_ray.runtime.trainer import TrainOptions, train
from tests.projects import first_module, isolated_imports, write_project


def snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analysis")
    with isolated_imports():
        cfg = write_project(root / "proj", epochs=2)
        pkg = SavePackage(cfg).save_to_new_dir()
        train(pkg, TrainOptions(cpu=True))
    return pkg


def inspect(self):
    return {
        "self": self,
        "cwd": os.getcwd(),
        "weights": {k: v.clone() for k, v in self.model.net.state_dict().items()},
        "acc": self.model.reduce_sum(torch.tensor(1.0)).item(),
    }


def test_analyze_returns_the_function_result_with_everything_loaded(package):
    before = snapshot(package)
    got = dlnest_ray.analyze(package, exp_func=inspect, checkpoint_id=-1)
    ctx = got["self"]
    state = SavePackage.open(package).state_dict(1)
    assert ctx.checkpoint_id == 1
    assert ctx.args["epochs"] == 2 and ctx.args["root_file_path"] == str(package)
    assert type(ctx.model).__name__ == "Model" and ctx.runner is ctx.model
    assert type(ctx.dataset).__name__ == "Dataset"
    assert len(ctx.dataset.train_loader.dataset) == 128
    assert ctx.log == state["log_dict"] and len(ctx.log["acc"]) == 2
    assert isinstance(ctx.package, SavePackage) and ctx.package.path == package
    assert ctx.life_cycle.best_acc == state["life_cycle"]["best_acc"]
    assert got["cwd"] == str(package)
    for name, tensor in first_module(state).items():
        assert torch.equal(got["weights"][name], tensor), name
    assert snapshot(package) == before


def test_dlnest_keywords_and_an_older_checkpoint(package):
    before = snapshot(package)
    got = dlnest_ray.analyze(recordPath=str(package), expFunc=inspect, checkpointID=0)
    state0 = SavePackage.open(package).state_dict(0)
    assert got["self"].checkpoint_id == 0
    assert len(got["self"].log["acc"]) == 1
    for name, tensor in first_module(state0).items():
        assert torch.equal(got["weights"][name], tensor), name
    assert snapshot(package) == before


def test_checkpoint_minus_two_builds_without_loading(package):
    before = snapshot(package)
    got = dlnest_ray.analyze(package, exp_func=inspect, checkpoint_id=-2)
    latest = SavePackage.open(package).state_dict()
    assert got["self"].checkpoint_id is None
    assert got["self"].log == {"loss": [], "acc": [], "val_loss": [], "lr": []}
    assert got["self"].life_cycle.best_acc == 0.0
    assert any(not torch.equal(got["weights"][k], v) for k, v in first_module(latest).items())
    assert snapshot(package) == before


def test_script_path_and_errors(package, tmp_path):
    script = tmp_path / "count.py"
    script.write_text("def experience(self):\n    return len(self.log['loss'])\n")
    assert dlnest_ray.analyze(package, script_path=script) == 8
    assert dlnest_ray.analyze(recordPath=package, scriptPath=str(script), checkpointID=0) == 4

    def boom(self):
        raise KeyError("from the user function")

    with pytest.raises(KeyError, match="from the user function"):
        dlnest_ray.analyze(package, exp_func=boom)
    bad = tmp_path / "bad.py"
    bad.write_text("def not_experience(self):\n    pass\n")
    with pytest.raises(UserCodeError, match="experience"):
        dlnest_ray.analyze(package, script_path=bad)
    with pytest.raises(TypeError):
        dlnest_ray.analyze(package)
    with pytest.raises(dlnest_ray.CheckpointError):
        dlnest_ray.analyze(package, exp_func=inspect, checkpoint_id=5)
