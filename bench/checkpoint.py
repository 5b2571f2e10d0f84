"""How long a checkpoint blocks the training loop, versus a bare ``torch.save``.

dlnest-ray's save is atomic (temp file, fsync, rename, fsync of the folder), hashed (sha256 in the
manifest) and recorded in ``_package.json``; the loop waits only for a snapshot of the state into CPU
memory, while serialising, hashing and fsync run on a background thread (one write in flight).

States: the MNIST template's CNN + Adam (after one step, so Adam has its moments), and a ~100 MB state.
For each, interleaved over repeats: the bare ``torch.save`` to a file (no fsync), the loop-blocking
time of ``SavePackage.save_checkpoint(wait=False)``, and for reference the full synchronous atomic save
(``wait=True``) and its time to durability. Prints median ratios against the bare ``torch.save``.

``--device cuda``: the states live on the GPU (the CNN, Adam's moments and the big state are CUDA
tensors), so the blocking time includes the device-to-host copy that the package's snapshot makes, and
the bare ``torch.save`` pays the same copy while it serialises. CUDA is synchronised before each timed
call starts. Without CUDA it stops with one line and exit status 2.

Goal: blocking ratio <= 1.15.    Usage: python bench/checkpoint.py [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_device import cuda_sync, describe, require  # noqa: E402

from dlnest_ray.savepack.package import SavePackage  # noqa: E402

CKPT_ARGS = {
    "max_ckpt_in_fast_track": 2,
    "max_ckpt_in_slow_track": 0,
    "dilation_in_slow_track": 100,
    "max_ckpt_in_consistent_track": 0,
}


def mnist_state(device: str = "cpu") -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "dlnest_ray" / "templates" / "mnist" / "Model"))
    from MNISTCNN import MNISTCNN

    net = MNISTCNN({"channels": [32, 64], "hidden": 128, "dropout": 0.5}).to(device)
    opt = torch.optim.Adam(net.parameters())
    loss = net(torch.randn(8, 1, 28, 28, device=device)).sum()
    loss.backward()
    opt.step()
    return {
        "runner": {0: net.state_dict(), "optimizer": {"optimizer": opt.state_dict()}},
        "log_dict": {"loss": [0.1] * 100},
    }


def big_state(mb: int = 100, device: str = "cpu") -> dict[str, Any]:
    n = mb * (1 << 20) // 4 // 10
    return {"runner": {i: {"w": torch.randn(n, device=device)} for i in range(10)}}


def tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors(v)]
    return []


def check_on(state: Any, device: str) -> None:
    """Every tensor of more than one element is on ``device``: the benchmark hands the package the
    device-resident state itself (Adam's ``step`` counters are 0-d CPU tensors even on a GPU)."""
    stray = [t.device for t in tensors(state) if t.numel() > 1 and t.device.type != device]
    if stray:
        raise SystemExit(f"checkpoint.py: {len(stray)} tensors are on {stray[0]}, not on {device}")


def nbytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(nbytes(v) for v in state.values())
    return 0


def bench(name: str, state: dict[str, Any], work: Path, repeats: int, device: str = "cpu") -> None:
    check_on(state, device)
    pkg = SavePackage()
    pkg.give_args({"save_root": str(work / "saves"), "checkpoint_args": CKPT_ARGS})
    pkg.save_to_new_dir(copy_files=False)
    bare_path = work / "bare.ckpt"
    bare, blocked, durable_async, sync = [], [], [], []
    for _ in range(repeats + 1):  # first round is a warm-up
        cuda_sync(device)
        t0 = time.perf_counter()
        torch.save(state, bare_path)
        bare.append(time.perf_counter() - t0)
        bare_path.unlink()

        cuda_sync(device)
        t0 = time.perf_counter()
        pkg.save_checkpoint(state, wait=False)  # the snapshot copies the device tensors to CPU memory
        blocked.append(time.perf_counter() - t0)
        pkg.flush()
        durable_async.append(time.perf_counter() - t0)

        cuda_sync(device)
        t0 = time.perf_counter()
        pkg.save_checkpoint(state, wait=True)
        sync.append(time.perf_counter() - t0)
    med = {
        k: statistics.median(v[1:])
        for k, v in {"bare": bare, "blocked": blocked, "durable": durable_async, "sync": sync}.items()
    }
    size = nbytes(state) / 2**20
    print(
        f"{name} ({size:.1f} MB of tensors): torch.save {med['bare'] * 1e3:.1f} ms | "
        f"dlnest-ray blocks the loop {med['blocked'] * 1e3:.1f} ms "
        f"(ratio {med['blocked'] / med['bare']:.2f}, goal <= 1.15) | "
        f"durable after {med['durable'] * 1e3:.1f} ms | "
        f"synchronous atomic save {med['sync'] * 1e3:.1f} ms (ratio {med['sync'] / med['bare']:.2f})",
        flush=True,
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="checkpoint.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the states live (default: cpu)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    require(opts.device, "checkpoint.py")
    print(f"checkpoint.py: device {describe(opts.device)}, repeats {opts.repeats}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="dlnest-ckpt-bench-", dir=str(REPO)))  # same disk as packages
    try:
        bench("MNIST CNN + Adam", mnist_state(opts.device), work, opts.repeats, opts.device)
        bench("100 MB state", big_state(100, opts.device), work, opts.repeats, opts.device)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
