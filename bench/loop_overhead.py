"""Overhead of the dlnest-ray training machinery over a plain PyTorch loop.

One epoch of the MNIST template's CNN on real MNIST (first 8,000 t10k images, batch 64), checkpointing
and validation off, through ``dlnest_ray.runtime.trainer.train`` (package open, user-code import, hooks,
fd-level output capture, metrics row) versus a plain loop over the same data with the same model code,
batch size, thread count and seed. Runs are interleaved; prints each pair and the median ratio.

Goal: median ratio <= 1.03.    Usage: python bench/loop_overhead.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dlnest_ray.cli.project import create_project  # noqa: E402
from dlnest_ray.runtime.trainer import TrainOptions, train  # noqa: E402
from dlnest_ray.savepack.package import SavePackage  # noqa: E402

SEED = 1234
NO_SAVE_LIFECYCLE = """
from dlnest_ray import LifeCycleBase


class LifeCycle(LifeCycleBase):
    def need_continue_train(self, epoch, log, args):
        return False
"""


def mnist_dir() -> Path:
    return Path(os.environ.get("DLNEST_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist")).resolve()


def make_project(work: Path) -> Path:
    project = create_project(work / "proj", mnist=True, data_root=mnist_dir())
    (project / "LifeCycle.py").write_text(NO_SAVE_LIFECYCLE)
    (project / "bench.json").write_text(json.dumps({"epochs": 1, "seed": SEED}))
    return project


def run_dlnest(project: Path) -> float:
    pkg = SavePackage(project / "root_config.json", project / "bench.json")
    path = pkg.save_to_new_dir()
    t0 = time.perf_counter()
    train(path, TrainOptions(cpu=True))
    elapsed = time.perf_counter() - t0
    shutil.rmtree(path)
    return elapsed


def run_plain(project: Path) -> float:
    """The same work written as a plain PyTorch script (data parsing and network from the template)."""
    args = SavePackage(project / "root_config.json", project / "bench.json").args
    sys.path[:0] = [str(project / "Model"), str(project / "Dataset")]
    try:
        import Dataset as dataset_module  # the template's IDX parser
        from MNISTCNN import MNISTCNN
    finally:
        del sys.path[:2]
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    ds = dataset_module.MNISTDataset(args)
    _, train_loader, _ = ds.init(args)
    net = MNISTCNN(args["model_config"])
    opt = torch.optim.Adam(net.parameters(), lr=args["model_config"]["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    net.train()
    for x, y in train_loader:
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    work = Path(tempfile.mkdtemp(prefix="dlnest-bench-"))
    try:
        project = make_project(work)
        run_plain(project)  # warm-up: imports, page cache, allocator
        ratios = []
        for i in range(opts.repeats):
            plain = run_plain(project)
            dl = run_dlnest(project)
            ratios.append(dl / plain)
            print(
                f"run {i}: plain {plain:7.3f} s   dlnest-ray {dl:7.3f} s   ratio {dl / plain:.3f}", flush=True
            )
        med = statistics.median(ratios)
        print(
            f"loop_overhead: median ratio dlnest-ray/plain = {med:.3f} (goal <= 1.03) "
            f"[threads={opts.threads}, repeats={opts.repeats}]"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
