"""Habits of real DLNest code that dlnest-ray used to break, in one GAN-style project trained with 2
DDP ranks on CPU: ``self.device = 0``, ``visualize(self, log, iter, epoch)``, a module registered twice,
``self.args = args["model_config"]``, ``self.log`` kept from an empty ``initLog``, an empty ``save_root``.
Its checkpoint loads on CPU into the right modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlnest_ray import SavePackage
from dlnest_ray.runtime.analysis import Analyzer
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.dlnest_projects import write_gan_project

from .ddp_helpers import run_ranks

SCALES = {"G": 1.0, "D_0": 2.0, "D_1": 3.0}  # each net starts with all weights at its own value


@pytest.fixture(scope="module")
def gan_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gan")
    cfg = write_gan_project(folder / "proj", epochs=2)
    pkg = SavePackage(cfg).save_to_new_dir()
    assert pkg is not None
    codes, details = run_ranks(pkg, folder)
    assert codes == [0, 0], details
    return pkg


@pytest.mark.slow
def test_an_empty_save_root_makes_packages_in_the_project_folder(gan_package: Path) -> None:
    assert gan_package.parent.name == "proj" and (gan_package.parent / "root_config.json").exists()


@pytest.mark.slow
def test_each_module_is_registered_once_and_saved_under_its_name(gan_package: Path) -> None:
    state = SavePackage.open(gan_package).state_dict()
    modules = state["runner"]["modules"]
    assert list(modules) == ["G", "D_0", "D_1", "bce"]  # 3 networks and the loss, not 3 networks twice
    assert not any(isinstance(k, int) for k in state["runner"])  # no positional keys any more


@pytest.mark.slow
def test_the_log_self_log_and_visualize_as_dlnest_called_it(gan_package: Path) -> None:
    log = SavePackage.open(gan_package).state_dict()["log_dict"]
    assert len(log["lossD"]) == len(log["lossG"]) == 2 * 2  # 2 epochs, 2 steps per rank
    assert log["visualized"] == [[0, 0, 1], [1, 0, 3]]  # visualize(log=..., iter=..., epoch=...)
    rows = read_metrics(gan_package).to_pylist()
    assert [r["epoch"] for r in rows] == [0, 1] and all(r["lossD"] is not None for r in rows)


@pytest.mark.slow
def test_the_checkpoint_loads_on_cpu_into_the_right_modules(gan_package: Path) -> None:
    saved = SavePackage.open(gan_package).state_dict()["runner"]["modules"]
    analyzer = Analyzer(gan_package, cpu=True)
    model = analyzer.context.model
    for name in SCALES:
        net = getattr(model, name)
        for key, tensor in saved[name].items():
            assert torch.equal(net.state_dict()[key], tensor), (name, key)
    # the three were trained apart: D_1 did not get D_0's weights (what positions did under DDP)
    assert not torch.equal(model.D_0.net_0.weight, model.D_1.net_0.weight)
    assert model.device == 0 and model.args == {"z": 4, "d": 6, "lr": 0.01}  # the user's own attributes


@pytest.mark.slow
def test_a_resumed_run_keeps_self_log_live(gan_package: Path, tmp_path: Path) -> None:
    train(gan_package, TrainOptions(resume=True, cpu=True))
    state = SavePackage.open(gan_package).state_dict()
    assert state["finished_epoch"] == 2
    assert len(state["log_dict"]["lossD"]) == 4 + 4  # one process now: 4 steps of the whole set
    rows = read_metrics(gan_package).to_pylist()
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[-1]["lossD"] is not None
    seg = json.loads((gan_package / "_package.json").read_text())["segments"][-1]
    assert (seg["kind"], seg["status"]) == ("resume", "succeeded")
