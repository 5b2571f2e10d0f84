"""Continuing a package from a checkpoint through the center."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeLauncher
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack.package import SavePackage
from tests.projects import isolated_imports, write_project

from ._helpers import info, launched, packages, status


def _package_with_checkpoints(center: Center, project: Path, n: int = 2) -> Path:
    """Submit a CPU run, write ``n`` checkpoints into its package, report it SUCCEEDED."""
    tid = center.run_train(str(project), placement="cpu")
    pkg_path = Path(info(center, tid)["package"])
    pkg = SavePackage.open(pkg_path)
    for i in range(n):
        pkg.save_checkpoint({"step": i}, epoch=i)
    center.task_finished(tid, "SUCCEEDED")
    return pkg_path


def test_continue_queues_a_resume_task(center: Center, launcher: FakeLauncher, project: Path):
    pkg = _package_with_checkpoints(center, project)
    tid = center.continue_train(str(pkg), memory_mb=6000, description="more epochs")
    assert tid == "T_0002"
    rec = info(center, tid)
    assert rec["status"] == "RUNNING"
    assert rec["resume"] is True and rec["ckpt_id"] == -1
    assert rec["package"] == str(pkg)
    assert rec["name"] == "proj"
    assert rec["description"] == "more epochs"
    last = launcher.launched[-1]
    assert (last.task_id, last.resume, last.package, last.gpus, last.mb_per_gpu) == (
        tid,
        True,
        str(pkg),
        (0,),
        6000,
    )
    assert len(packages(project)) == 1  # no new package


def test_continue_from_a_given_checkpoint(center: Center, launcher: FakeLauncher, project: Path):
    pkg = _package_with_checkpoints(center, project, n=3)
    tid = center.continue_train(str(pkg), ckpt_id=1, placement="cpu")
    assert info(center, tid)["ckpt_id"] == 1
    assert launcher.launched[-1].ckpt_id == 1


def test_continue_without_checkpoints_is_refused(center: Center, project: Path):
    tid = center.run_train(str(project), placement="cpu")
    center.task_finished(tid, "FAILED", error="x")
    with pytest.raises(DlnestError, match="no valid checkpoint"):
        center.continue_train(info(center, tid)["package"])
    assert len([t.to_row() for t in center.get_task_info(include_finished=True)]) == 1


def test_continue_from_a_missing_checkpoint_is_refused(center: Center, project: Path):
    pkg = _package_with_checkpoints(center, project, n=2)
    with pytest.raises(DlnestError, match="checkpoint 5"):
        center.continue_train(str(pkg), ckpt_id=5)
    assert len([t.to_row() for t in center.get_task_info(include_finished=True)]) == 1


def test_continue_from_a_damaged_checkpoint_is_refused(center: Center, project: Path):
    pkg = _package_with_checkpoints(center, project, n=2)
    SavePackage.open(pkg).ckpt_path(1).write_bytes(b"garbage")
    with pytest.raises(DlnestError, match="damaged"):
        center.continue_train(str(pkg), ckpt_id=1)
    assert len([t.to_row() for t in center.get_task_info(include_finished=True)]) == 1


def test_continue_of_a_busy_package_is_refused(center: Center, project: Path):
    pkg = _package_with_checkpoints(center, project)
    first = center.continue_train(str(pkg), placement="cpu")
    with pytest.raises(DlnestError, match=first):
        center.continue_train(str(pkg), placement="cpu")
    # also while the continuation is only pending
    center.task_finished(first, "SUCCEEDED")
    center.change_devices([])
    pending = center.continue_train(str(pkg), memory_mb=1000)
    assert status(center, pending) == "PENDING"
    with pytest.raises(DlnestError, match=pending):
        center.continue_train(str(pkg), placement="cpu")
    # once it is deleted, the package is free again
    center.del_task(pending)
    assert status(center, center.continue_train(str(pkg), placement="cpu")) == "RUNNING"


def test_continue_refused_while_original_run_is_unfinished(center: Center, project: Path):
    tid = center.run_train(str(project), placement="cpu")
    pkg = Path(info(center, tid)["package"])
    SavePackage.open(pkg).save_checkpoint({"x": 1})
    with pytest.raises(DlnestError, match=tid):
        center.continue_train(str(pkg))


def test_continue_of_a_non_package_is_refused(center: Center, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlnestError):
        center.continue_train(str(tmp_path / "empty"))
    assert [t.to_row() for t in center.get_task_info(include_finished=True)] == []


def test_continue_with_an_impossible_request_is_refused(center: Center, project: Path):
    pkg = _package_with_checkpoints(center, project)
    with pytest.raises(DlnestError, match="can never run"):
        center.continue_train(str(pkg), memory_mb=40000)
    with pytest.raises(DlnestError, match="placement"):
        center.continue_train(str(pkg), placement="nope")
    assert len([t.to_row() for t in center.get_task_info(include_finished=True)]) == 1


def test_continue_after_a_real_cpu_training(center: Center, launcher: FakeLauncher, tmp_path: Path):
    from dlnest_ray.runtime.trainer import TrainOptions, train

    project = write_project(tmp_path / "real", epochs=1, n_train=32, n_val=16)
    tid = center.run_train(str(project), placement="cpu")
    pkg = info(center, tid)["package"]
    with isolated_imports():
        result = train(pkg, TrainOptions(cpu=True, async_checkpoints=False))
    assert result.last_checkpoint is not None
    center.task_finished(tid, "SUCCEEDED")
    again = center.continue_train(pkg, placement="cpu")
    assert info(center, again)["resume"] is True
    assert launched(launcher)[-1] == (again, None, (), 0)


def test_continue_keeps_the_runs_description_unless_given_one(center: Center, project: Path):
    tid = center.run_train(str(project), placement="cpu", description="lr 3e-3")
    pkg_path = Path(info(center, tid)["package"])
    SavePackage.open(pkg_path).save_checkpoint({"step": 0}, epoch=0)
    center.task_finished(tid, "SUCCEEDED")
    kept = center.continue_train(str(pkg_path), placement="cpu")
    assert info(center, kept)["description"] == "lr 3e-3"
    pkg = SavePackage.open(pkg_path)  # the continuation records it as the run's latest description
    seg = pkg.begin_segment({"kind": "resume", "task_id": kept, "description": "lr 3e-3, longer"})
    pkg.end_segment(seg, status="succeeded")
    center.task_finished(kept, "SUCCEEDED")
    again = center.continue_train(str(pkg_path), placement="cpu")
    assert info(center, again)["description"] == "lr 3e-3, longer"
    center.task_finished(again, "SUCCEEDED")
    given = center.continue_train(str(pkg_path), placement="cpu", description="other")
    assert info(center, given)["description"] == "other"
