"""kill -9 while a checkpoint is written leaves a package whose latest valid checkpoint loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dlnest_ray.savepack.package import SavePackage

from ._helpers import ids_on_disk, new_package, read_manifest, temp_files

HELPER = Path(__file__).with_name("_crash_writer.py")
REPO = Path(__file__).resolve().parents[2]
GUARD_S = 120  # generous guard against a hung helper; not a timing assertion


def start_writer(package: Path, marker: Path, mode: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, str(HELPER), str(package), str(marker), mode],
        cwd=package,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not ready():
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"crash helper exited early with {proc.returncode}:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("crash helper never became ready")
        time.sleep(0.005)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def assert_checkpoint_zero_is_latest(package: Path) -> None:
    manifest = json.loads((package / "_package.json").read_text(encoding="utf-8"))  # valid JSON
    assert sorted(manifest["checkpoints"]) == ["0"]
    assert manifest["next_ckpt_id"] == 1
    pkg = SavePackage.open(package)
    assert pkg.latest_valid_id() == 0
    state = pkg.state_dict()
    assert state["id"] == 0
    assert torch.equal(state["w"], torch.arange(10))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = new_package(tmp_path / "Saves", fast=3, slow=0, dilation=1, consistent=0)
    assert pkg.path is not None
    return pkg.path


def test_kill_mid_write(package: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    proc = start_writer(package, marker, "mid")
    wait_for(proc, marker.exists)
    kill9(proc)
    # the kill really landed mid-write: a partial temp file, no state_1.ckpt
    leftovers = temp_files(package)
    assert [f.name.split(".tmp-")[0] for f in leftovers] == [".state_1.ckpt"]
    assert 0 < leftovers[0].stat().st_size < 200_000_000
    assert ids_on_disk(package) == {0}
    assert_checkpoint_zero_is_latest(package)
    # the leftover temp file is cleaned up; the next save reuses id 1
    pkg = SavePackage.open(package)
    pkg.remove_temp_files()
    assert temp_files(package) == []
    assert pkg.save_checkpoint({"id": "1b"}) == 1
    assert SavePackage.open(package).state_dict() == {"id": "1b"}


def test_kill_after_file_before_manifest(package: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    proc = start_writer(package, marker, "after_file")
    wait_for(proc, marker.exists)
    kill9(proc)
    # the complete file is there, but the manifest never named it
    assert ids_on_disk(package) == {0, 1}
    assert temp_files(package) == []
    assert_checkpoint_zero_is_latest(package)
    pkg = SavePackage.open(package)
    assert pkg.save_checkpoint({"id": "1b"}) == 1
    assert SavePackage.open(package).state_dict() == {"id": "1b"}


def test_kill_during_unpaused_write(package: Path, tmp_path: Path) -> None:
    """No stall: kill as soon as checkpoint 1's temp file shows up; whatever is latest must load intact."""
    marker = tmp_path / "ready"
    proc = start_writer(package, marker, "race")
    wait_for(proc, marker.exists)
    wait_for(proc, lambda: bool(temp_files(package)) or (package / "Checkpoints" / "state_1.ckpt").exists())
    kill9(proc)
    pkg = SavePackage.open(package)
    latest = pkg.latest_valid_id()
    assert latest in (0, 1)
    state = pkg.state_dict()
    assert state["id"] == latest
    if latest == 0:
        assert torch.equal(state["w"], torch.arange(10))
    else:
        assert state["big"].numel() == 50_000_000 and bool((state["big"] == 1).all())
    pkg.remove_temp_files()
    assert temp_files(package) == []


def test_simulated_stray_complete_file_without_manifest_entry(package: Path) -> None:
    pkg = SavePackage.open(package)
    pkg.save_checkpoint({"id": 0, "w": torch.arange(10)})
    # what a kill between the rename and the manifest update leaves behind
    torch.save({"id": 1, "w": torch.zeros(10)}, package / "Checkpoints" / "state_1.ckpt")
    assert read_manifest(package)["next_ckpt_id"] == 1
    assert_checkpoint_zero_is_latest(package)


def test_remove_temp_files_keeps_checkpoints(package: Path) -> None:
    pkg = SavePackage.open(package)
    pkg.save_checkpoint({"id": 0, "w": torch.arange(10)})
    (package / "Checkpoints" / ".state_1.ckpt.tmp-0a1b2c3d").write_bytes(b"\0" * 100)
    (package / "Checkpoints" / ".state_2.ckpt.tmp-ffffffff").write_bytes(b"")
    pkg.remove_temp_files()
    assert temp_files(package) == []
    assert ids_on_disk(package) == {0}
    assert_checkpoint_zero_is_latest(package)
