"""A user exception ends the run cleanly: traceback in the output, after_all called, TrainingFailed raised,
the segment marked failed, earlier checkpoints intact, the process's stdout/stderr restored."""

from __future__ import annotations

import json
import os
import sys

import pytest

from dlnest_ray import SavePackage, TrainingFailed
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import read_hooks, write_project


def fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_exception_in_run_one_step(tmp_path):
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", epochs=3, fail_at_epoch=1, hook_file=hooks)
    pkg = SavePackage(cfg).save_to_new_dir()
    fds_before = (fd_identity(1), fd_identity(2))
    streams_before = (sys.stdout, sys.stderr)

    with pytest.raises(TrainingFailed) as info:
        train(pkg, TrainOptions(cpu=True))

    message = str(info.value)
    assert "RuntimeError: injected failure at epoch 1" in message
    assert str(pkg / "_output.txt") in message
    assert isinstance(info.value.__cause__, RuntimeError)
    # the process is as before: fds 1/2 and sys.stdout/sys.stderr restored
    assert (fd_identity(1), fd_identity(2)) == fds_before
    assert (sys.stdout, sys.stderr) == streams_before

    out = (pkg / "_output.txt").read_text()
    assert "Traceback (most recent call last)" in out
    assert "RuntimeError: injected failure at epoch 1" in out
    assert str(pkg / "Model" / "Model.py") in out  # the package's copy ran
    assert "Epoch #0 finished!" in out and "Epoch #1 finished!" not in out

    calls = read_hooks(hooks)
    assert calls[-1] == "after_all"
    assert calls.count("after_all") == 1
    assert calls.count("before_one_epoch") == 2 and calls.count("after_one_epoch") == 1

    seg = json.loads((pkg / "_package.json").read_text())["segments"][-1]
    assert seg["status"] == "failed"
    assert seg["error"] == "RuntimeError: injected failure at epoch 1"
    assert seg["finished_epoch"] == 0

    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == [0]
    assert opened.latest_valid_id() == 0
    state = opened.state_dict(0)
    assert state["finished_epoch"] == 0 and len(state["log_dict"]["loss"]) == 4
    assert [r["epoch"] for r in read_metrics(pkg).to_pylist()] == [0]


def test_exception_while_building_still_runs_after_all(tmp_path):
    """The trainer documents: "A user exception anywhere ends the run: train_aborting prints the traceback
    into the output, after_all still runs"."""
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", epochs=1, fail_in_dataset_init=True, hook_file=hooks)
    pkg = SavePackage(cfg).save_to_new_dir()
    with pytest.raises(TrainingFailed, match=r"ValueError: injected failure in Dataset\.init"):
        train(pkg, TrainOptions(cpu=True))
    out = (pkg / "_output.txt").read_text()
    assert "Traceback (most recent call last)" in out and "injected failure in Dataset.init" in out
    seg = json.loads((pkg / "_package.json").read_text())["segments"][-1]
    assert seg["status"] == "failed" and seg["finished_epoch"] == -1
    assert SavePackage.open(pkg).checkpoint_ids() == []
    calls = read_hooks(hooks)
    assert calls[:2] == ["before_all", "before_dataset_init"]
    assert calls[-1] == "after_all"


def test_resume_without_checkpoint_fails_with_a_clear_error(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    with pytest.raises(TrainingFailed, match="no valid checkpoint"):
        train(pkg, TrainOptions(cpu=True, resume=True))
    assert SavePackage.open(pkg).checkpoint_ids() == []


STOP_AFTER_EPOCH_0 = """

_plain_after_one_epoch = LifeCycle.after_one_epoch


def _ask_to_stop(self):
    if self.status.epoch == 0:  # what `dlnest-ray del` does: the run's stop file appears
        Path(self.args["stop_file_for_test"]).touch()
    return _plain_after_one_epoch(self)


LifeCycle.after_one_epoch = _ask_to_stop
"""


@pytest.mark.parametrize("user_aborting", [False, True])
def test_a_stopped_run_ends_with_one_line_not_a_traceback(tmp_path, user_aborting):
    from dlnest_ray.runtime.trainer import StopRequested

    stop = tmp_path / "T_0001.stop"
    cfg = write_project(tmp_path / "proj", epochs=3, extra={"stop_file_for_test": str(stop)})
    code = STOP_AFTER_EPOCH_0
    if user_aborting:  # a life cycle of its own for stops still gets its call
        code += "\n\ndef _aborting(self, e):\n    print('user saw', type(e).__name__)\n\n"
        code += "LifeCycle.train_aborting = _aborting\n"
    with open(tmp_path / "proj" / "LifeCycle.py", "a", encoding="utf-8") as f:
        f.write(code)
    pkg = SavePackage(cfg).save_to_new_dir()
    with pytest.raises(StopRequested) as info:
        train(pkg, TrainOptions(cpu=True, stop_file=str(stop), task_id="T_0001"))
    assert str(info.value) == "stopped at epoch 1 by request; checkpoint 0 kept"
    out = (pkg / "_output.txt").read_text()
    assert "Traceback" not in out and "StopRequested" not in out.replace("user saw StopRequested", "")
    assert out.rstrip().endswith("[dlnest-ray] stopped at epoch 1 by request; checkpoint 0 kept")
    assert ("user saw StopRequested" in out) is user_aborting
    seg = json.loads((pkg / "_package.json").read_text())["segments"][-1]
    assert (seg["status"], seg["finished_epoch"]) == ("interrupted", 0)
