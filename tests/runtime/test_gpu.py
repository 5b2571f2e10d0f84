"""GPU checks: run where a GPU is lent (`pytest -m gpu`); skipped on CPU-only machines such as CI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlnest_ray.cli.project import create_project
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.package import SavePackage
from tests.projects import first_module

pytestmark = pytest.mark.gpu


def _package(tmp_path: Path) -> Path:
    project = create_project(tmp_path / "proj", mnist=False)
    return SavePackage(project / "root_config.json").save_to_new_dir()


def test_train_on_gpu_saves_device_agnostic_checkpoints(tmp_path: Path) -> None:
    path = _package(tmp_path)
    result = train(path, TrainOptions(gpus=(0,)))
    assert result.finished_epoch >= 0
    pkg = SavePackage.open(path)
    seg = pkg.meta["segments"][-1]
    assert seg["env"] == "GPU" and seg["devices"][0].startswith("cuda:0")
    state = pkg.state_dict(device="cpu")
    weights = [v for v in first_module(state).values() if isinstance(v, torch.Tensor)]
    assert weights and all(w.device.type == "cpu" for w in weights)
    # resume on the GPU continues the run
    again = train(path, TrainOptions(resume=True, gpus=(0,)))
    assert again.finished_epoch == result.finished_epoch + 1


def test_bare_tensor_batches_reach_the_gpu() -> None:
    from dlnest_ray.runtime.trainer import move_to_device

    device = torch.device("cuda", 0)
    moved = move_to_device({"x": torch.ones(2), "pair": (torch.zeros(1), [torch.ones(1)])}, device)
    assert moved["x"].device == device
    assert moved["pair"][0].device == device and moved["pair"][1][0].device == device
    assert move_to_device(torch.ones(3), device).device == device
