"""Overhead of the dlnest-ray training machinery over a plain PyTorch loop.

One epoch of the MNIST template's CNN on real MNIST (first 8,000 t10k images, batch 64), checkpointing
and validation off, through ``dlnest_ray.runtime.trainer.train`` (package open, user-code import, hooks,
fd-level output capture, metrics row) versus a plain loop over the same data with the same model code,
batch size, thread count and seed. Runs are interleaved; prints each pair and the median ratio.

``--device cuda``: both loops train on the GPU (cuda:0). The plain loop moves each batch there itself
from the template's pinned-memory loader; dlnest-ray's trainer is started with ``TrainOptions(cpu=False)``
and picks cuda:0 as a GPU run does (the benchmark checks that its package recorded a CUDA device). CUDA
is synchronised before each timer starts and before it stops. Without CUDA it stops with one line and
exit status 2.

Goal: median ratio <= 1.03 (issue 16 asks <= 1.01, 7 pairs or more).
Usage: python bench/loop_overhead.py [--repeats 5] [--threads 2]
[--device cpu|cuda]
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
sys.path.insert(0, str(REPO / "bench"))

from bench_device import cuda_sync, describe, require  # noqa: E402

from dlnest_ray.cli.project import create_project  # noqa: E402
from dlnest_ray.runtime.status import EnvType, RunningStatus  # noqa: E402
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


def recorded_devices(path: Path) -> list[str]:
    """The devices the trainer recorded for the run's segments in ``_package.json``."""
    try:
        meta = json.loads((path / "_package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(d) for seg in meta.get("segments") or [] for d in seg.get("devices") or []]


def run_dlnest(project: Path, device: str = "cpu") -> float:
    pkg = SavePackage(project / "root_config.json", project / "bench.json")
    path = pkg.save_to_new_dir()
    cuda_sync(device)
    t0 = time.perf_counter()
    train(path, TrainOptions(cpu=device == "cpu"))
    cuda_sync(device)
    elapsed = time.perf_counter() - t0
    if device == "cuda":
        devices = recorded_devices(path)
        if not devices or not all(d.startswith("cuda") for d in devices):
            raise SystemExit(
                f"loop_overhead.py: the dlnest-ray run did not train on CUDA (devices {devices})"
            )
    shutil.rmtree(path)
    return elapsed


def run_plain(project: Path, device: str = "cpu") -> float:
    """The same work written as a plain PyTorch script (data parsing and network from the template)."""
    args = SavePackage(project / "root_config.json", project / "bench.json").args
    sys.path[:0] = [str(project / "Model"), str(project / "Dataset")]
    try:
        import Dataset as dataset_module  # the template's IDX parser
        from MNISTCNN import MNISTCNN
    finally:
        del sys.path[:2]
    cuda = device == "cuda"
    cuda_sync(device)
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    if cuda:  # the template's loader pins memory on a GPU, as in a dlnest-ray GPU run
        ds = dataset_module.MNISTDataset(
            args, None, RunningStatus(env=EnvType.GPU, device=torch.device(device))
        )
    else:
        ds = dataset_module.MNISTDataset(args)
    _, train_loader, _ = ds.init(args)
    net = MNISTCNN(args["model_config"])
    if cuda:
        net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args["model_config"]["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    net.train()
    for x, y in train_loader:
        if cuda:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    cuda_sync(device)
    return time.perf_counter() - t0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="loop_overhead.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where both loops train (default: cpu)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    require(opts.device, "loop_overhead.py")
    torch.set_num_threads(opts.threads)
    print(
        f"loop_overhead.py: device {describe(opts.device)}, threads {opts.threads}, repeats {opts.repeats}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="dlnest-bench-"))
    try:
        project = make_project(work)
        run_plain(project, opts.device)  # warm-up: imports, page cache, allocator (and the CUDA context)
        ratios = []
        for i in range(opts.repeats):
            plain = run_plain(project, opts.device)
            dl = run_dlnest(project, opts.device)
            ratios.append(dl / plain)
            print(
                f"run {i}: plain {plain:7.3f} s   dlnest-ray {dl:7.3f} s   ratio {dl / plain:.3f}", flush=True
            )
        med = statistics.median(ratios)
        print(
            f"loop_overhead: median ratio dlnest-ray/plain = {med:.3f} (goal <= 1.03) "
            f"[device={opts.device}, threads={opts.threads}, repeats={opts.repeats}]"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
