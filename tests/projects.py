"""Small synthetic test projects written into a folder (DLNest layout), plus helpers to inspect runs.

``write_project(folder, style="snake" | "camel", ...)`` writes a runnable project and returns the path of
its ``root_config.json``:

* ``snake``: the PEP 8 API (``init``, ``init_log``, ``run_one_step``, ``before_all``, ``need_validation``);
* ``camel``: exactly DLNest's coding-guide style (``initLog``, ``runOneStep``, ``self.register(model,
  syncBN=True)``, ``self._reduceMean``, ``BAll``/``AOneEpoch`` hooks, ``getSaveDict``/``loadSaveDict``);
  the only change from a DLNest project is the import line.

The data are Gaussian blobs drawn from a fixed ``torch.Generator`` (independent of the run seed); the
train loader shuffles and the network has Dropout, so restoring RNG states matters for resume. Batches are
``(index, x, y)`` so a run can record which samples it saw. The optimizer is Adam with a StepLR stepped in
the life cycle's before-save hook (before the checkpoint is taken) and a ReduceLROnPlateau stepped in
``validate``.

Behaviour is driven by the ``test`` dict of the config (so a freq config can change it):

* ``hook_file``: append one line per hook / model call to this file (absolute path);
* ``fail_at_epoch`` (or env ``DLNEST_TEST_FAIL_AT_EPOCH``): raise in ``run_one_step`` (iter 1) of that epoch;
* ``fail_in_dataset_init``: raise in ``Dataset.init``;
* ``skip``: ``{hook name: [call numbers]}``: that hook returns ``"Skip"`` on those calls (counted from 0);
* ``visualize_every``: ``need_visualize`` is true when ``iter % visualize_every == 0``;
* ``noisy``: write to fd 1 / fd 2 / a child process / print during the first step;
* ``record_dir``: the life cycle's ``after_all`` writes ``rank<rank>.json`` there (samples seen, losses);
* ``save_every`` (snake style): ``need_save_model`` only every that many epochs, and at the last one.

The env var ``DLNEST_TEST_TAG`` is recorded by the life cycle after each epoch (in its save dict), to tell
branches of a run apart.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DLNEST_HOOK_ORDER",
    "assert_same_state",
    "isolated_imports",
    "read_hooks",
    "write_freq",
    "write_project",
]

# DLNest's before/after hook names in the order a stage is entered (B*) and left (A*).
DLNEST_HOOK_ORDER = (
    "BAll",
    "BDatasetInit",
    "ADatasetInit",
    "BModelInit",
    "AModelInit",
    "BTrain",
    "BOneEpoch",
    "BModelOneStep",
    "AModelOneStep",
    "BVisualize",
    "AVisualize",
    "BValidation",
    "AValidation",
    "BSaveModel",
    "ASaveModel",
    "AOneEpoch",
    "ATrain",
    "AAll",
)

_SNAKE_STAGES = (
    ("all", "All"),
    ("dataset_init", "DatasetInit"),
    ("model_init", "ModelInit"),
    ("train", "Train"),
    ("one_epoch", "OneEpoch"),
    ("model_one_step", "ModelOneStep"),
    ("visualize", "Visualize"),
    ("validation", "Validation"),
    ("save_model", "SaveModel"),
)

DEFAULT_CHECKPOINT_ARGS = {
    "max_ckpt_in_fast_track": 10,
    "max_ckpt_in_slow_track": 0,
    "dilation_in_slow_track": 1,
    "max_ckpt_in_consistent_track": 1,
}

# ----------------------------------------------------------------------------------------- shared code
HELPER = '''\
"""Sibling module imported by Model.py (``from helper import ...``)."""
import torch
from torch import nn

MARK = "original-helper"
NUM_FEATURES, NUM_CLASSES = 6, 3


class Net(nn.Module):
    def __init__(self, num_features, hidden, num_classes, dropout):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


def make_blobs(n, generator):
    """``n`` points in NUM_CLASSES overlapping Gaussian blobs (fixed by ``generator``)."""
    centers = torch.randn(NUM_CLASSES, NUM_FEATURES, generator=torch.Generator().manual_seed(99)) * 1.5
    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    x = centers[y] + torch.randn(n, NUM_FEATURES, generator=generator)
    return x, y


class IndexedData(torch.utils.data.Dataset):
    """Returns ``(index, x, y)`` so a model can record which samples it saw."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return i, self.x[i], self.y[i]


def record_line(args, line):
    path = args.get("test", {}).get("hook_file")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\\n")
'''

# ----------------------------------------------------------------------------------------- snake_case
SNAKE_DATASET = '''\
"""Synthetic dataset (snake_case API)."""
import torch
from torch.utils.data import DataLoader

from dlnest_ray import DatasetBase
from helper import NUM_CLASSES, NUM_FEATURES, IndexedData, make_blobs


class Dataset(DatasetBase):
    def init(self, args):
        cfg = args["dataset_config"]
        if args.get("test", {}).get("fail_in_dataset_init"):
            raise ValueError("injected failure in Dataset.init")
        g = torch.Generator().manual_seed(cfg["data_seed"])
        x, y = make_blobs(cfg["n_train"] + cfg["n_val"], g)
        n = cfg["n_train"]
        train_ds, val_ds = IndexedData(x[:n], y[:n]), IndexedData(x[n:], y[n:])
        train_sampler = self.sampler(train_ds)
        val_sampler = self.sampler(val_ds, shuffle=False)
        self.train_loader = DataLoader(
            train_ds, batch_size=cfg["batch_size"], shuffle=train_sampler is None, sampler=train_sampler
        )
        self.val_loader = DataLoader(
            val_ds, batch_size=cfg["val_batch_size"], shuffle=False, sampler=val_sampler
        )
        self.init_calls = getattr(self, "init_calls", 0) + 1
        return {"num_features": NUM_FEATURES, "num_classes": NUM_CLASSES}, self.train_loader, self.val_loader

    def get_save_dict(self):
        return {"data_seed": self.args["dataset_config"]["data_seed"]}

    def load_save_dict(self, save_dict):
        self.restored = dict(save_dict)
'''

SNAKE_MODEL = '''\
"""Synthetic-data MLP (snake_case API)."""
import os
import subprocess
import sys
import time

import torch
from torch import nn

from dlnest_ray import ModelBaseTorch
from helper import MARK, Net, record_line


class Model(ModelBaseTorch):
    def init(self, args, dataset_info):
        cfg = args["model_config"]
        self.net = Net(
            dataset_info["num_features"], cfg["hidden"], dataset_info["num_classes"], cfg["dropout"]
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.record = {"seen": {}, "loss": [], "local_loss": [], "rank_mean": None, "env": self.env_type}
        print(f"helper mark: {MARK}")

    def init_log(self):
        return {"loss": [], "acc": [], "val_loss": [], "lr": []}

    def init_optimizer(self):
        cfg = self.args["model_config"]
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=cfg["lr_gamma"])
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.5, patience=0, threshold=0.5
        )

    def run_one_step(self, data, log, iter, epoch):
        t = self.args.get("test", {})
        fail_at = os.environ.get("DLNEST_TEST_FAIL_AT_EPOCH") or t.get("fail_at_epoch")
        if fail_at is not None and int(fail_at) == epoch and iter == 1:
            raise RuntimeError(f"injected failure at epoch {epoch}")
        if t.get("noisy") and iter == 0 and epoch == 0:
            print("noise: print")
            os.write(1, b"noise: os.write fd1\\n")
            os.write(2, b"noise: os.write fd2\\n")
            subprocess.run(["echo", "noise: from-child"], check=True)
            sys.stderr.write("noise: sys.stderr\\n")
            sys.stderr.flush()
        if t.get("step_sleep_s"):
            time.sleep(float(t["step_sleep_s"]))  # keeps a run busy for tests of queues and cancels
        idx, x, y = data
        self.record["seen"].setdefault(str(epoch), []).extend(int(i) for i in idx)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        reduced = self.reduce_mean(loss.detach()).item()
        log["loss"].append(reduced)
        self.record["loss"].append(reduced)
        self.record["local_loss"].append(loss.item())

    def visualize(self, epoch, iter, log):
        record_line(self.args, "model.visualize")

    def validate(self, val_loader, log):
        record_line(self.args, "model.validate")
        self.net.eval()
        correct, total, loss_sum = torch.zeros(()), torch.zeros(()), torch.zeros(())
        with torch.no_grad():
            for _, x, y in val_loader:
                out = self.net(x)
                loss_sum += self.loss_fn(out, y) * len(y)
                correct += (out.argmax(dim=1) == y).sum()
                total += len(y)
        self.net.train()
        correct, total, loss_sum = self.reduce_sum(correct), self.reduce_sum(total), self.reduce_sum(loss_sum)
        acc, val_loss = (correct / total).item(), (loss_sum / total).item()
        log["acc"].append(acc)
        log["val_loss"].append(val_loss)
        log["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.record["rank_mean"] = self.reduce_mean(torch.tensor(float(max(self.rank, 0)))).item()
        self.plateau.step(val_loss)
        if self.status.is_main:
            print(f"val acc {acc:.4f} val loss {val_loss:.4f}")
'''


def _snake_life_cycle() -> str:
    hooks = []
    for snake, _camel in _SNAKE_STAGES:
        for when in ("before", "after"):
            name = f"{when}_{snake}"
            if name in ("before_save_model", "after_all"):
                continue
            hooks.append(f"    def {name}(self):\n        return self._hook({name!r})\n")
    return (
        '''\
"""Life cycle of the synthetic project (snake_case API); records hook calls when asked."""
import json
import os
from pathlib import Path

from dlnest_ray import LifeCycleBase
from helper import record_line


class LifeCycle(LifeCycleBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.best_acc = 0.0
        self.history = []
        self.calls = {}

    def _hook(self, name):
        n = self.calls.get(name, 0)
        self.calls[name] = n + 1
        record_line(self.args, name)
        if n in self.args.get("test", {}).get("skip", {}).get(name, []):
            return "Skip"
        return None

'''
        + "\n".join(hooks)
        + """
    def before_save_model(self):
        # Runs before the checkpoint is taken (state changed later in the epoch would be lost on resume):
        # step the LR schedule and record the finished epoch with the branch tag.
        result = self._hook("before_save_model")
        self.model.scheduler.step()
        self.history.append([self.status.epoch, os.environ.get("DLNEST_TEST_TAG", "")])
        return result

    def after_all(self):
        self._hook("after_all")
        record_dir = self.args.get("test", {}).get("record_dir")
        if record_dir and self.model is not None:
            rec = dict(self.model.record, rank=self.status.rank, world_size=self.status.world_size)
            if os.path.isdir("/proc/self/task"):  # the niceness of each of the rank's threads
                tids = [int(t) for t in os.listdir("/proc/self/task")]
                rec["thread_nice"] = sorted({os.getpriority(os.PRIO_PROCESS, t) for t in tids})
            Path(record_dir, f"rank{self.status.rank}.json").write_text(json.dumps(rec))

    def need_visualize(self, epoch, iter, log, args):
        every = args.get("test", {}).get("visualize_every")
        return bool(every) and iter % every == 0

    def need_validation(self, epoch, log, args):
        return True

    def command_line_output(self, epoch, log, args):
        record_line(args, "command_line_output")
        print(f"Epoch #{epoch} finished! loss {log['loss'][-1]:.4f}")

    def need_save_model(self, epoch, log, args):
        every = args.get("test", {}).get("save_every", 1)
        return (epoch + 1) % every == 0 or epoch + 1 >= args["epochs"]

    def hold_this_checkpoint(self, epoch, log, args):
        if log["acc"] and log["acc"][-1] > self.best_acc:
            self.best_acc = log["acc"][-1]
            return True
        return False

    def need_continue_train(self, epoch, log, args):
        return epoch + 1 < args["epochs"]

    def get_save_dict(self):
        out = {"best_acc": self.best_acc, "history": [list(h) for h in self.history]}
        ballast = self.args.get("test", {}).get("ballast_mb")
        if ballast:  # a big checkpoint whose write takes a while (rank 0 only: no DDP traffic)
            import torch

            out["ballast"] = torch.rand(int(ballast) * 2**18)
        return out

    def load_save_dict(self, save_dict):
        self.best_acc = save_dict["best_acc"]
        self.history = [list(h) for h in save_dict["history"]]
"""
    )


# ----------------------------------------------------------------------------------------- DLNest style
CAMEL_DATASET = """\
from dlnest_ray import DatasetBase

import torch
from torch.utils import data
from helper import NUM_CLASSES, NUM_FEATURES, IndexedData, make_blobs


class Dataset(DatasetBase):
    def init(self, args: dict):
        cfg = args["dataset_config"]
        g = torch.Generator().manual_seed(cfg["data_seed"])
        x, y = make_blobs(cfg["n_train"] + cfg["n_val"], g)
        n = cfg["n_train"]
        self.dataTrain = IndexedData(x[:n], y[:n])
        self.dataTest = IndexedData(x[n:], y[n:])

        trainSampler = self.getSampler(self.dataTrain)
        testSampler = self.getSampler(self.dataTest)
        if trainSampler is None:
            self.trainLoader = data.DataLoader(self.dataTrain, batch_size=cfg["batch_size"], shuffle=True)
            self.testLoader = data.DataLoader(self.dataTest, batch_size=cfg["val_batch_size"], shuffle=False)
        else:
            self.trainLoader = data.DataLoader(self.dataTrain, batch_size=cfg["batch_size"],
                                               sampler=trainSampler)
            self.testLoader = data.DataLoader(self.dataTest, batch_size=cfg["val_batch_size"],
                                              sampler=testSampler)

        return {"numFeatures": NUM_FEATURES, "numClasses": NUM_CLASSES}, self.trainLoader, self.testLoader
"""

CAMEL_MODEL_HEAD = """\
from dlnest_ray import ModelBaseTorch

import torch
import torch.nn as nn
from helper import Net, record_line


class Model(ModelBaseTorch):
    def init(self, args: dict, datasetInfo: dict = None):
        cfg = args["model_config"]
        model = Net(datasetInfo["numFeatures"], cfg["hidden"], datasetInfo["numClasses"], cfg["dropout"])
        self.model = self.register(model, syncBN=True)  # But no BN
        cost = nn.CrossEntropyLoss()
        self.cost = self.register(cost)
        self.envTypeSeen = self._envType
        self.rankSeen = self._rank

    def initLog(self):
        return {
            "loss": [],
            "acc": [],
            "lr": [],
        }

    def initOptimizer(self):
        cfg = self.args["model_config"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=cfg["lr_gamma"])
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=0.5,
                                                                  patience=0)

    def runOneStep(self, data, log: dict, iter: int, epoch: int):
        failAt = self.args.get("test", {}).get("fail_at_epoch")
        if failAt is not None and failAt == epoch and iter == 1:
            raise RuntimeError("injected failure at epoch " + str(epoch))
        self.model.zero_grad()
        _, x, y = data
        pred = self.model(x)
        loss = self.cost(pred, y)
        loss.backward()
        self.optimizer.step()

        loss = self._reduceMean(loss)
        log["loss"].append(loss.detach().item())

    def visualize(self, epoch: int, iter: int, log: dict):
        record_line(self.args, "model.visualize")
"""

CAMEL_VALIDATE = """
    def validate(self, valLoader, log: dict):
        record_line(self.args, "model.validate")
        self.model.eval()
        totalCorrect, total = 0, 0
        with torch.no_grad():
            for _, x, y in valLoader:
                output = self.model(x)
                _, pred = torch.max(output, 1)
                totalCorrect += (pred == y).sum().item()
                total += y.shape[0]
        self.model.train()
        acc = totalCorrect / total
        log["acc"].append(acc)
        log["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.plateau.step(acc)
"""

CAMEL_THREE_PHASE = """
    def validationInit(self):
        record_line(self.args, "model.validationInit")
        self.model.eval()
        self.totalCorrect = 0
        self.total = 0

    def validateABatch(self, data, iter: int):
        _, x, y = data
        with torch.no_grad():
            output = self.model(x)
            _, pred = torch.max(output, 1)
            self.totalCorrect += (pred == y).sum().item()
            self.total += y.shape[0]

    def validationAnalyze(self, log: dict):
        record_line(self.args, "model.validationAnalyze")
        self.model.train()
        acc = self.totalCorrect / self.total
        log["acc"].append(acc)
        log["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.plateau.step(acc)
"""

CAMEL_MODEL_TAIL = """
    def getSaveDict(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "plateau": self.plateau.state_dict(),
        }

    def loadSaveDict(self, saveDict):
        self.model.load_state_dict(saveDict["model"])
        self.optimizer.load_state_dict(saveDict["optimizer"])
        self.scheduler.load_state_dict(saveDict["scheduler"])
        self.plateau.load_state_dict(saveDict["plateau"])
"""


def _camel_life_cycle() -> str:
    hooks = []
    for hook in DLNEST_HOOK_ORDER:
        if hook in ("BAll", "BSaveModel"):
            continue
        hooks.append(f"    def {hook}(self):\n        return self._hook({hook!r})\n")
    return (
        """\
from dlnest_ray import LifeCycleBase

from helper import record_line


class LifeCycle(LifeCycleBase):
    def _hook(self, name):
        calls = self.__dict__.setdefault("calls", {})
        n = calls.get(name, 0)
        calls[name] = n + 1
        record_line(self.args, name)
        if n in self.args.get("test", {}).get("skip", {}).get(name, []):
            return "Skip"
        return None

    def BAll(self):
        self.maxAcc = 0.0
        self.finishedEpochs = []
        return self._hook("BAll")

    def BSaveModel(self):
        result = self._hook("BSaveModel")
        self.runner.scheduler.step()
        self.finishedEpochs.append(self._status.epoch)
        return result

"""
        + "\n".join(hooks)
        + """
    def needVisualize(self, epoch: int, iter: int, logdict: dict, args: dict):
        every = args.get("test", {}).get("visualize_every")
        return bool(every) and iter % every == 0

    def needValidation(self, epoch: int, logdict: dict, args: dict):
        return True

    def commandLineOutput(self, epoch: int, logdict: dict, args: dict):
        record_line(args, "commandLineOutput")
        print("Epoch #" + str(epoch) + " finished!")

    def needSaveModel(self, epoch: int, logdict: dict, args: dict):
        return True

    def holdThisCheckpoint(self, epoch: int, logdict: dict, args: dict):
        if logdict["acc"][-1] > self.maxAcc:
            self.maxAcc = logdict["acc"][-1]
            return True
        return False

    def getSaveDict(self):
        return {
            "max_acc": self.maxAcc,
            "finished_epochs": list(self.finishedEpochs),
        }

    def loadSaveDict(self, saveDict):
        self.maxAcc = saveDict["max_acc"]
        self.finishedEpochs = list(saveDict["finished_epochs"])

    def needContinueTrain(self, epoch: int, logdict: dict, args: dict):
        if epoch + 1 >= args["epochs"]:
            return False
        return True
"""
    )


# ----------------------------------------------------------------------------------------- writer
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _dump(path: Path, data: dict[str, Any]) -> None:
    _write(path, json.dumps(data, indent=4) + "\n")


def write_project(
    folder: str | Path,
    *,
    style: str = "snake",
    epochs: int = 3,
    seed: int | None = 1234,
    checkpoint_args: dict[str, int] | None = None,
    hook_file: str | Path | None = None,
    fail_at_epoch: int | None = None,
    fail_in_dataset_init: bool = False,
    skip: dict[str, list[int]] | None = None,
    visualize_every: int | None = None,
    noisy: bool = False,
    step_sleep_s: float = 0.0,
    ballast_mb: int = 0,
    record_dir: str | Path | None = None,
    save_every: int | None = None,
    validation: str = "validate",
    n_train: int = 128,
    n_val: int = 64,
    batch_size: int = 32,
    hidden: int = 16,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a small project into ``folder`` (created) and return its ``root_config.json``.

    ``validation`` (camel style only): ``"validate"`` or ``"three_phase"`` (DLNest's validationInit /
    validateABatch / validationAnalyze).
    """
    if style not in ("snake", "camel"):
        raise ValueError(f"unknown style {style!r}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    test: dict[str, Any] = {}
    if hook_file is not None:
        test["hook_file"] = str(Path(hook_file).resolve())
    if fail_at_epoch is not None:
        test["fail_at_epoch"] = fail_at_epoch
    if fail_in_dataset_init:
        test["fail_in_dataset_init"] = True
    if skip:
        test["skip"] = skip
    if visualize_every:
        test["visualize_every"] = visualize_every
    if noisy:
        test["noisy"] = True
    if step_sleep_s:
        test["step_sleep_s"] = step_sleep_s
    if ballast_mb:
        test["ballast_mb"] = ballast_mb
    if record_dir is not None:
        test["record_dir"] = str(Path(record_dir).resolve())
    if save_every is not None:
        test["save_every"] = save_every

    _write(root / "Model" / "helper.py", HELPER)
    if style == "snake":
        _write(root / "Model" / "Model.py", SNAKE_MODEL)
        _write(root / "Dataset" / "Dataset.py", SNAKE_DATASET)
        _write(root / "LifeCycle.py", _snake_life_cycle())
    else:
        body = CAMEL_THREE_PHASE if validation == "three_phase" else CAMEL_VALIDATE
        _write(root / "Model" / "Model.py", CAMEL_MODEL_HEAD + body + CAMEL_MODEL_TAIL)
        _write(root / "Dataset" / "Dataset.py", CAMEL_DATASET)
        _write(root / "LifeCycle.py", _camel_life_cycle())

    root_config: dict[str, Any] = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "checkpoint_args": dict(checkpoint_args or DEFAULT_CHECKPOINT_ARGS),
        "root_file_path": ".",
        "model_file_path": "./Model/Model.py",
        "dataset_file_path": "./Dataset/Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "other_file_paths": ["./Model/helper.py"],
        "child_jsons": ["./common_config.json", "./model_config.json", "./dataset_config.json"],
    }
    common: dict[str, Any] = {"epochs": epochs, "test": test}
    if seed is not None:
        common["seed"] = seed
    common.update(extra or {})
    _dump(root / "root_config.json", root_config)
    _dump(root / "common_config.json", common)
    _dump(
        root / "model_config.json",
        {"model_config": {"hidden": hidden, "dropout": 0.3, "lr": 0.01, "lr_gamma": 0.8}},
    )
    _dump(
        root / "dataset_config.json",
        {
            "dataset_config": {
                "data_seed": 5,
                "n_train": n_train,
                "n_val": n_val,
                "batch_size": batch_size,
                "val_batch_size": 32,
            }
        },
    )
    _dump(root / "freq_config.json", {})
    return root / "root_config.json"


def write_freq(path: str | Path, **values: Any) -> Path:
    """Write a freq config (merged last by ``-f``) holding ``values``."""
    p = Path(path)
    _dump(p, values)
    return p


# ----------------------------------------------------------------------------------------- inspection
def read_hooks(path: str | Path) -> list[str]:
    """The lines a project's ``hook_file`` recorded (empty when it was never written)."""
    p = Path(path)
    return p.read_text(encoding="utf-8").splitlines() if p.exists() else []


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Recursive equality where tensors must be ``torch.equal`` (same dtype, shape and values)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{where}: tensor vs non-tensor"
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        )
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{where}: arrays differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: dict vs {type(b).__name__}"
        assert set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: sequences differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@contextlib.contextmanager
def isolated_imports() -> Iterator[None]:
    """Restore ``sys.path`` and forget user modules (Model, Dataset, helper...) imported inside the block.

    Modules imported from the installation (torch submodules, dlnest_ray...) are kept: importing them a
    second time would create duplicate module objects.
    """
    saved_path = list(sys.path)
    saved = dict(sys.modules)
    roots = {sys.prefix, sys.base_prefix, Path(__file__).parents[1]}
    keep_roots = tuple(str(Path(p).resolve()) for p in roots)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if saved.get(name) is module:
                continue
            file = getattr(module, "__file__", None)
            if file is None or str(Path(file).resolve()).startswith(keep_roots):
                continue
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                del sys.modules[name]


def first_module(state: dict[str, Any]) -> dict[str, Any]:
    """The state dict of the first module a checkpoint's model part holds (keyed by attribute name)."""
    return next(iter(state["runner"]["modules"].values()))
