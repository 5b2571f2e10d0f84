"""Projects written the way DLNest code is written, to run under dlnest-ray with only imports changed.

* :func:`write_dlnest032_mnist`: a DLNest 0.3.2-style MNIST project — a *runner* (``runner_name``,
  ``Runner(RunnerBaseTorch)``), DLNest's camelCase hooks, three-step validation, a plugins config with
  all four plugins, ``MailsNotePlugin.giveResultValues`` in the life cycle, ``epoch >= args["epochs"]``
  as the stop rule, ``getArgs()``, ``_status.worldSize``, ``taskProcess``. Real MNIST (a subset).
* :func:`write_gan_project`: a GAN-style project with the habits of real DLNest code that dlnest-ray
  broke: ``self.device = 0``, ``visualize(self, log, iter, epoch)``, ``self.D_0 = self.register(self.D_0)``
  (a module registered twice), ``self.args = args["model_config"]``, an ``initLog`` that stores
  ``self.log`` and returns an empty dict, and an empty ``save_root``.

``DLNEST_IMPORTS`` maps each import line to the one DLNest itself would need: the files differ from
DLNest code in exactly those lines (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DLNEST_IMPORTS", "write_dlnest032_mnist", "write_gan_project"]

# dlnest-ray import → the DLNest 0.3.2 import it replaces
DLNEST_IMPORTS = {
    "from dlnest_ray import RunnerBaseTorch": "from DLNest.Common.RunnerBaseTorch import RunnerBaseTorch",
    "from dlnest_ray import DatasetBase": "from DLNest.Common.DatasetBase import DatasetBase",
    "from dlnest_ray import LifeCycleBase": "from DLNest.Common.LifeCycleBase import LifeCycleBase",
    "from dlnest_ray.plugins.MailsNote import DLNestPlugin as MailsNotePlugin": (
        "from DLNest.Plugins.MailsNote import DLNestPlugin as MailsNotePlugin"
    ),
}

MNIST_RUNNER = """\
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import StepLR

from dlnest_ray import RunnerBaseTorch
from MNISTCNN import MNISTModel


class Runner(RunnerBaseTorch):
    def init(self, args: dict, datasetInfo: dict = None):
        self.model = MNISTModel(args["model_config"])
        self.cost = nn.CrossEntropyLoss()

    def initLog(self):
        return {"loss": [], "acc": []}

    def initOptimizer(self):
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.getArgs()["model_config"]["lr"])
        self.scheduler = StepLR(self.optimizer, 3)

    def runOneStep(self, data, log: dict, iter: int, epoch: int):
        self.model.zero_grad()
        x, y = data
        loss = self.cost(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        loss = self._reduceMean(loss)
        log["loss"].append(loss.detach().item())

    def visualize(self, epoch: int, iter: int, log: dict):
        pass

    def validationInit(self):
        self.correct = 0
        self.total = 0

    def validateABatch(self, data, iter: int):
        x, y = data
        with torch.no_grad():
            pred = self.model(x).argmax(dim=1)
        self.correct += (pred == y).sum().item()
        self.total += y.numel()

    def validationAnalyze(self, log: dict):
        both = self._reduceSum(torch.tensor([float(self.correct), float(self.total)], device=self.device))
        log["acc"].append(float(both[0] / both[1]))
"""

MNIST_NET = """\
import torch.nn as nn


class MNISTModel(nn.Module):
    def __init__(self, args: dict):
        super().__init__()
        feats = args["feats"]
        self.conv = nn.Sequential(
            nn.Conv2d(feats[0], feats[1], 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(feats[1], feats[2], 3, 1, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(14 * 14 * feats[2], feats[3]), nn.ReLU(), nn.Linear(feats[3], 10))

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
"""

MNIST_DATASET = """\
import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlnest_ray import DatasetBase


def readIDX(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class MNISTDataset(DatasetBase):
    def init(self, args: dict):
        cfg = self.getArgs()["dataset_config"]
        root = Path(cfg["data_root"])
        images = readIDX(root / "t10k-images-idx3-ubyte.gz")
        labels = readIDX(root / "t10k-labels-idx1-ubyte.gz")
        x = (torch.from_numpy(images.copy()).float().unsqueeze(1) / 255.0 - 0.5) / 0.5
        y = torch.from_numpy(labels.copy()).long()
        nTrain, nVal = cfg["n_train"], cfg["n_val"]
        self.trainSet = TensorDataset(x[:nTrain], y[:nTrain])
        self.testSet = TensorDataset(x[-nVal:], y[-nVal:])
        if self._status.env == "DDP":
            trainSampler = self.getSampler(self.trainSet)
            testSampler = self.getSampler(self.testSet)
            trainLoader = DataLoader(self.trainSet, batch_size=cfg["batch_size"], sampler=trainSampler)
            testLoader = DataLoader(self.testSet, batch_size=cfg["batch_size"], sampler=testSampler)
        else:
            trainLoader = DataLoader(self.trainSet, batch_size=cfg["batch_size"], shuffle=True)
            testLoader = DataLoader(self.testSet, batch_size=cfg["batch_size"], shuffle=False)
        return {}, trainLoader, testLoader
"""

MNIST_LIFE_CYCLE = """\
import logging
import os

from dlnest_ray import LifeCycleBase
from dlnest_ray.plugins.MailsNote import DLNestPlugin as MailsNotePlugin


class LifeCycle(LifeCycleBase):
    def __init__(self, taskProcess=None, plugins=[], status=None):
        super().__init__(taskProcess=taskProcess, plugins=plugins, status=status)

    def BAll(self):
        self.maxAcc = 0.0

    def needVisualize(self, epoch: int, iter: int, logdict: dict, args: dict):
        return True

    def needValidation(self, epoch: int, logdict: dict, args: dict):
        return True

    def commandLineOutput(self, epoch: int, logdict: dict, args: dict):
        print("Epoch #" + str(epoch) + " finished!")
        logging.info("world size %d, env %s, training %s", self._status.worldSize, self._status.env,
                     self._status.isTraining())
        print("task args epochs:", self.taskProcess.task.args["epochs"],
              "finished:", self.taskProcess.finishedEpoch)

    def needSaveModel(self, epoch: int, logdict: dict, args: dict):
        return True

    def holdThisCheckpoint(self, epoch: int, logdict: dict, args: dict):
        if logdict["acc"][-1] > self.maxAcc:
            self.maxAcc = logdict["acc"][-1]
            MailsNotePlugin.giveResultValues({"acc": self.maxAcc, "epoch": epoch})
            return True
        return False

    def needContinueTrain(self, epoch: int, logdict: dict, args: dict):
        if epoch >= args["epochs"]:
            return False
        return True

    def getSaveDict(self):
        return {"max_acc": self.maxAcc}

    def loadSaveDict(self, saveDict):
        self.maxAcc = saveDict["max_acc"]

    def AAll(self):
        if os.environ.get("DLNEST_TEST_ECHO"):
            print("echo from the submitting shell:", os.environ["DLNEST_TEST_ECHO"])
"""

MNIST_GET_ACC = """\
import torch


def experience(self):
    self.runner.validationInit()
    loader = torch.utils.data.DataLoader(self.dataset.testSet, batch_size=64)
    for i, (x, y) in enumerate(loader):
        self.runner.validateABatch((x.to(self.runner.device), y.to(self.runner.device)), i)
    log = {"acc": []}
    self.runner.validationAnalyze(log)
    print("Accuracy:", log["acc"][-1])
    return log["acc"][-1]
"""


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_dlnest032_mnist(
    folder: Path,
    *,
    data_root: Path,
    epochs: int = 1,
    smtp_port: int = 25,
    n_train: int = 512,
    n_val: int = 256,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The DLNest 0.3.2-style MNIST project (module docstring); returns its root_config.json. With
    ``epochs: 1`` it trains 2 epochs (0 and 1): the life cycle stops at ``epoch >= epochs``."""
    _write(folder / "Model" / "Runner.py", MNIST_RUNNER)
    _write(folder / "Model" / "MNISTCNN.py", MNIST_NET)
    _write(folder / "Dataset" / "Dataset.py", MNIST_DATASET)
    _write(folder / "LifeCycle.py", MNIST_LIFE_CYCLE)
    _write(folder / "AnalyzeScripts" / "getAcc.py", MNIST_GET_ACC)
    _dump(folder / "common_config.json", {"other_file_paths": ["./Model/MNISTCNN.py"], "epochs": epochs})
    _dump(folder / "model_config.json", {"model_config": {"feats": [1, 8, 16, 32], "lr": 0.002}})
    _dump(
        folder / "dataset_config.json",
        {
            "dataset_config": {
                "data_root": str(data_root),
                "batch_size": 64,
                "n_train": n_train,
                "n_val": n_val,
            }
        },
    )
    _dump(
        folder / "plugins_config.json",
        {
            "plugins": ["LogInit", "AutoTensorboardScalar", "SimpleCMDVisualize", "MailsNote"],
            "plugins_config": {
                "SimpleCMDVisualize": {
                    "stride": 4,
                    "keys": ["loss", "acc"],
                    "format": {"loss": "\t| {} : {:.6f}", "acc": "\t| {} : {:.6f}"},
                },
                "LogInit": {"level": "INFO"},
                "MailsNote": {
                    "enable_list": ["Aborting", "TrainFinish"],
                    "username": "me@example.org",
                    "password": "",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                },
            },
        },
    )
    _dump(folder / "freq_config.json", {})
    root = {
        "save_root": "./Saves",
        "runner_name": "Runner",
        "dataset_name": "MNISTDataset",
        "life_cycle_name": "LifeCycle",
        "root_file_path": ".",
        "runner_file_path": "./Model/Runner.py",
        "dataset_file_path": "./Dataset/Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "checkpoint_args": {
            "max_ckpt_in_slow_track": 0,
            "dilation_in_slow_track": 100,
            "max_ckpt_in_fast_track": 1,
            "max_ckpt_in_consistent_track": 1,
        },
        "child_jsons": [
            "./common_config.json",
            "./model_config.json",
            "./dataset_config.json",
            "./plugins_config.json",
        ],
        **(extra or {}),
    }
    _dump(folder / "root_config.json", root)
    return folder / "root_config.json"


GAN_MODEL = """\
import torch
import torch.nn as nn

from dlnest_ray import RunnerBaseTorch


class Net(nn.Module):
    def __init__(self, n_in, n_out, scale):
        super().__init__()
        self.net_0 = nn.Linear(n_in, n_out)
        self.spare = nn.Linear(1, 1)  # never used: DDP needs ddp_find_unused_parameters (root config)
        with torch.no_grad():  # tell the three apart by their weights
            self.net_0.weight.fill_(scale)
            self.net_0.bias.fill_(scale)

    def forward(self, x):
        return self.net_0(x)


class Model(RunnerBaseTorch):
    def init(self, args, datasetInfo=None):
        self.args = args["model_config"]  # DLNest code keeps only its own part
        self.device = 0  # and names an attribute `device`
        self.G = Net(self.args["z"], self.args["d"], 1.0)
        self.G = self.register(self.G)  # registered twice: assigned, then register()ed again
        self.D_0 = Net(self.args["d"], 1, 2.0)
        self.D_0 = self.register(self.D_0)
        self.D_1 = Net(self.args["d"], 1, 3.0)
        self.D_1 = self.register(self.D_1)
        self.bce = nn.BCEWithLogitsLoss()

    def initLog(self):
        self.log = {}  # stored and returned empty: the keys are added as they come
        return self.log

    def initOptimizer(self):
        self.optG = torch.optim.SGD(self.G.parameters(), lr=self.args["lr"])
        both = list(self.D_0.parameters()) + list(self.D_1.parameters())
        self.optD = torch.optim.SGD(both, lr=self.args["lr"])

    def runOneStep(self, data, log, iter, epoch):
        real = data[0]
        z = torch.randn(real.shape[0], self.args["z"])
        fake = self.G(z)
        self.optD.zero_grad()
        lossD = (
            self.bce(self.D_0(real), torch.ones(real.shape[0], 1))
            + self.bce(self.D_1(fake.detach()), torch.zeros(real.shape[0], 1))
        )
        lossD.backward()
        self.optD.step()
        self.optG.zero_grad()
        lossG = self.bce(self.D_1(fake), torch.ones(real.shape[0], 1)) + 0.0 * self.D_0(fake).sum()
        lossG.backward()
        self.optG.step()
        self.log.setdefault("lossD", []).append(float(self._reduceMean(lossD.detach())))
        self.log.setdefault("lossG", []).append(float(lossG.detach()))

    def visualize(self, log, iter, epoch):  # DLNest called it by keyword: this order worked there
        self.log.setdefault("visualized", []).append([epoch, iter, len(log["lossD"])])
"""

GAN_DATASET = """\
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlnest_ray import DatasetBase


class Dataset(DatasetBase):
    def init(self, args):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, args["model_config"]["d"], generator=g))
        sampler = self.getSampler(data)
        loader = DataLoader(data, batch_size=16, sampler=sampler, shuffle=sampler is None)
        return {}, loader, loader
"""

GAN_LIFE_CYCLE = """\
from dlnest_ray import LifeCycleBase


class LifeCycle(LifeCycleBase):
    def needVisualize(self, epoch, iter, log, args):
        return iter == 0

    def needSaveModel(self, epoch, log, args):
        return True

    def needContinueTrain(self, epoch, log, args):
        return epoch + 1 < args["epochs"]
"""


def write_gan_project(folder: Path, *, epochs: int = 2) -> Path:
    """The GAN-style project (module docstring): an empty ``save_root``, so packages are made in the
    project folder itself, as DLNest did; returns its root_config.json."""
    _write(folder / "Model.py", GAN_MODEL)
    _write(folder / "Dataset.py", GAN_DATASET)
    _write(folder / "LifeCycle.py", GAN_LIFE_CYCLE)
    root = {
        "save_root": "",
        "model_name": "Model",
        "model_file_path": "./Model.py",
        "dataset_name": "Dataset",
        "dataset_file_path": "./Dataset.py",
        "life_cycle_name": "LifeCycle",
        "life_cycle_file_path": "./LifeCycle.py",
        "root_file_path": ".",
        "checkpoint_args": {
            "max_ckpt_in_slow_track": 0,
            "dilation_in_slow_track": 1,
            "max_ckpt_in_fast_track": 1,
            "max_ckpt_in_consistent_track": 0,
        },
        "epochs": epochs,
        "ddp_timeout_s": 60,
        "ddp_find_unused_parameters": True,  # dlnest-ray's setting: read from its copy, not self.args
        "model_config": {"z": 4, "d": 6, "lr": 0.01},
    }
    _dump(folder / "root_config.json", root)
    return folder / "root_config.json"
