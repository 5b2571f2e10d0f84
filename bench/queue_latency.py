"""Queue latency: from submitting a run to its first training step, on a warm local Ray cluster.

dlnest-ray: ``Client.run_train`` (the package with its code snapshot is created at submit, the policy
places the run, a supervisor actor starts, a placement group is reserved, the rank starts in the node's
warm rank process (torch already imported; ``--cold``: warm processes off, a fresh worker imports it),
imports the copied code and builds dataset and model) until the user's first ``run_one_step``. Ray
Train: ``TorchTrainer(...).fit()`` with one CPU worker running the same tiny model until its first step.
Both record the first step's wall-clock time from inside the user code. Interleaved, after one warm-up
of each; before each measurement the cluster settles (the warm process that replaces a used one has
finished importing), so neither side pays for the other's background work.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).

Goal (issue 16): median ratio dlnest-ray / Ray Train <= 0.3.
Usage: python bench/queue_latency.py [--repeats 5] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = """
import json, time
import torch
from torch import nn
from dlnest_ray import ModelBaseTorch


class Model(ModelBaseTorch):
    def init(self, args, dataset_info):
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
        self.loss_fn = nn.CrossEntropyLoss()

    def init_log(self):
        return {"loss": []}

    def init_optimizer(self):
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def run_one_step(self, data, log, iter, epoch):
        if self.status.global_step == 0:
            with open(self.args["stamp_file"], "w") as f:
                json.dump({"first_step": time.time()}, f)
        x, y = data
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        log["loss"].append(loss.item())
"""

DATASET = """
import torch
from torch.utils.data import DataLoader, TensorDataset
from dlnest_ray import DatasetBase


class Dataset(DatasetBase):
    def init(self, args):
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(256, 8, generator=g), torch.randint(0, 2, (256,), generator=g))
        return {}, DataLoader(ds, batch_size=32, shuffle=True), DataLoader(ds, batch_size=64)
"""

LIFE_CYCLE = """
from dlnest_ray import LifeCycleBase


class LifeCycle(LifeCycleBase):
    def need_continue_train(self, epoch, log, args):
        return False
"""


def make_project(root: Path) -> Path:
    for rel, text in {"Model.py": MODEL, "Dataset.py": DATASET, "LifeCycle.py": LIFE_CYCLE}.items():
        (root / rel).write_text(text)
    cfg = {
        "save_root": "./Saves",
        "model_name": "Model",
        "dataset_name": "Dataset",
        "life_cycle_name": "LifeCycle",
        "checkpoint_args": {
            "max_ckpt_in_fast_track": 1,
            "max_ckpt_in_slow_track": 0,
            "dilation_in_slow_track": 1,
            "max_ckpt_in_consistent_track": 0,
        },
        "root_file_path": ".",
        "model_file_path": "./Model.py",
        "dataset_file_path": "./Dataset.py",
        "life_cycle_file_path": "./LifeCycle.py",
        "seed": 0,
    }
    (root / "root_config.json").write_text(json.dumps(cfg))
    return root / "root_config.json"


def ray_train_loop(config: dict) -> None:
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 8, generator=g), torch.randint(0, 2, (256,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for step, (xb, yb) in enumerate(loader):
        if step == 0:
            with open(config["stamp_file"], "w") as f:
                json.dump({"first_step": time.time()}, f)
        opt.zero_grad()
        loss_fn(net(xb), yb).backward()
        opt.step()


def wait_stamp(path: Path, timeout: float = 300.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return float(json.loads(path.read_text())["first_step"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)
    raise TimeoutError(f"no first step recorded in {path}")


def settle(timeout: float = 120.0) -> None:
    """Wait until no node's warm rank process is still importing torch, then 1 s more."""
    import ray

    from dlnest_ray.actors.ray_ports import alive_nodes, monitor_for

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = ray.get([monitor_for(full).warm_state.remote() for full in alive_nodes().values()])
        if "starting" not in states:
            break
        time.sleep(0.2)
    time.sleep(1.0)


def ran_warm(package: str) -> bool:
    """Whether the run's rank started in a warm rank process (its package's segment says so)."""
    from dlnest_ray.savepack.package import SavePackage

    return bool(SavePackage.open(package).meta["segments"][-1].get("warm_start"))


def time_dlnest(client: object, config: Path, work: Path, n: int) -> tuple[float, bool]:
    stamp = work / f"dl_{n}.json"
    freq = work / f"dl_{n}_freq.json"
    freq.write_text(json.dumps({"stamp_file": str(stamp)}))
    t0 = time.time()
    tid = client.run_train(str(config), freq_path=str(freq), placement="cpu")  # type: ignore[attr-defined]
    first = wait_stamp(stamp)
    while True:  # the run ends before the next measurement (it trains one short epoch)
        task = next(t for t in client.get_task_info(include_finished=True) if t.task_id == tid)  # type: ignore[attr-defined]
        if task.status.is_terminal():
            break
        time.sleep(0.05)
    if task.status.value != "SUCCEEDED":
        raise SystemExit(f"{tid} ended {task.status.value}: {task.error}")
    return first - t0, ran_warm(task.package)


def time_ray_train(work: Path, n: int) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    stamp = work / f"rt_{n}.json"
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"stamp_file": str(stamp)},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False),
        run_config=RunConfig(name=f"rt_{n}", storage_path=str(work / "ray_results")),
    )
    t0 = time.time()
    fit = threading.Thread(target=trainer.fit)
    fit.start()
    first = wait_stamp(stamp)
    fit.join()
    return first - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="Warm rank processes off (DLNEST_RAY_WARM_RANKS=0).")
    opts = ap.parse_args()
    if opts.cold:
        os.environ["DLNEST_RAY_WARM_RANKS"] = "0"  # before ray.init: the cluster's workers inherit it
    import ray

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    work = Path(tempfile.mkdtemp(prefix="dlnest-queue-bench-"))
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(num_cpus=2, namespace=NAMESPACE, include_dashboard=False, logging_level="ERROR")
    try:
        client = Client(get_or_create_center(str(work / "home")))
        config = make_project(work)
        settle()
        time_dlnest(client, config, work, -1)  # warm-up: imports, worker pools
        time_ray_train(work, -1)
        ratios = []
        for i in range(opts.repeats):
            settle()
            dl, warm = time_dlnest(client, config, work, i)
            settle()
            rt = time_ray_train(work, i)
            ratios.append(dl / rt)
            start = "warm" if warm else "cold"
            print(f"run {i}: dlnest-ray {dl:6.2f} s ({start})   Ray Train {rt:6.2f} s   ratio {dl / rt:.2f}")
        med = statistics.median(ratios)
        print(
            f"queue_latency: median ratio dlnest-ray / Ray Train to first step = {med:.2f} "
            f"(goal <= 0.3) [repeats={opts.repeats}{', cold' if opts.cold else ''}]"
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
