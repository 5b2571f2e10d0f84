"""``--device {cpu,cuda}`` of bench/checkpoint.py and bench/loop_overhead.py: parsing, the one-line
refusal without CUDA, and (on a GPU) that the checkpoint benchmark's state really is GPU-resident and goes
through the package's own snapshot. No benchmark is run here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("checkpoint.py", "loop_overhead.py")


def _load(script: str) -> ModuleType:
    name = f"bench_{script.removesuffix('.py')}"
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would (dataclasses and pickling look it up there)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_device_parses_and_defaults_to_cpu(script: str) -> None:
    mod = _load(script)
    assert mod.parse([]).device == "cpu"
    assert mod.parse(["--device", "cuda"]).device == "cuda"
    assert mod.parse(["--device", "cpu", "--repeats", "2"]).repeats == 2
    with pytest.raises(SystemExit) as e:
        mod.parse(["--device", "tpu"])
    assert e.value.code == 2


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_help_names_the_option(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--device {cpu,cuda}" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("script", SCRIPTS)
def test_cuda_without_cuda_is_one_line_and_exit_2(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--device", "cuda", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # stopped before the header line and any work
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"{script}: error: --device cuda: CUDA is not available to torch {torch.__version__}"]


def test_the_cpu_state_is_refused_when_cuda_was_asked_for() -> None:
    """The guard against handing the package a CPU copy of a state meant to be on the GPU."""
    mod = _load("checkpoint.py")
    mod.check_on(mod.big_state(1), "cpu")
    with pytest.raises(SystemExit, match=r"10 tensors are on cpu, not on cuda"):
        mod.check_on(mod.big_state(1), "cuda")


@pytest.mark.gpu
def test_the_gpu_state_goes_through_the_package_snapshot(tmp_path: Path) -> None:
    from dlnest_ray.savepack.package import SavePackage

    mod = _load("checkpoint.py")
    state = mod.mnist_state("cuda")
    mod.check_on(state, "cuda")  # parameters and Adam's moments are CUDA tensors
    assert any(t.is_cuda for t in mod.tensors(state))
    pkg = SavePackage()
    pkg.give_args({"save_root": str(tmp_path / "saves"), "checkpoint_args": mod.CKPT_ARGS})
    pkg.save_to_new_dir(copy_files=False)
    for _ in range(2):  # the second save copies into the first snapshot's CPU buffers
        pkg.save_checkpoint(state, wait=False)
        pkg.flush()
    snap = pkg._last_snapshot
    assert snap is not None and all(t.device.type == "cpu" for t in mod.tensors(snap))
    src, got = mod.tensors(state), mod.tensors(snap)
    assert len(src) == len(got) and all(torch.equal(a.cpu(), b) for a, b in zip(src, got, strict=True))
