"""Preemption inside a run (issue 14): when the preempt file appears, the run finishes the epoch it is in,
saves a checkpoint of it even where its life cycle saves none (pinned until the run has resumed past
it), and stops with one line; resumed, it ends with exactly the state of a run never preempted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlnest_ray import SavePackage
from dlnest_ray.runtime.trainer import PreemptRequested, TrainOptions, train
from tests.projects import assert_same_state, first_module, write_project

# The preempt file appears in the middle of the run: after epoch 0 (the run is then in epoch 1).
PREEMPT_AFTER_EPOCH_0 = """

_plain_after_one_epoch = LifeCycle.after_one_epoch


def _preempt_soon(self):
    if self.status.epoch == 0:
        Path(self.args["preempt_file_for_test"]).touch()
    return _plain_after_one_epoch(self)


LifeCycle.after_one_epoch = _preempt_soon
"""


def project(tmp_path: Path, name: str, epochs: int, preempt: Path | None) -> Path:
    extra = {"preempt_file_for_test": str(preempt)} if preempt else {}
    cfg = write_project(tmp_path / name, epochs=epochs, seed=99, save_every=epochs, extra=extra)
    if preempt is not None:
        with open(tmp_path / name / "LifeCycle.py", "a", encoding="utf-8") as f:
            f.write("from pathlib import Path\n" + PREEMPT_AFTER_EPOCH_0)
    return cfg


def manifest(pkg: Path) -> dict:
    return json.loads((pkg / "_package.json").read_text())


def test_a_preempted_run_saves_its_epoch_stops_and_resumes_to_the_same_weights(tmp_path: Path) -> None:
    flag = tmp_path / "T_0002.preempt"
    full = SavePackage(project(tmp_path, "full", 4, None)).save_to_new_dir()
    part = SavePackage(project(tmp_path, "part", 4, flag)).save_to_new_dir()
    train(full, TrainOptions(cpu=True))

    with pytest.raises(PreemptRequested) as info:
        train(part, TrainOptions(cpu=True, preempt_file=str(flag), task_id="T_0002"))
    assert str(info.value) == "preempted after epoch 1; checkpoint 0 kept"
    out = (part / "_output.txt").read_text()
    assert "Traceback" not in out and out.rstrip().endswith(
        "[dlnest-ray] preempted after epoch 1; checkpoint 0 kept"
    )
    m = manifest(part)
    # save_every=4: the life cycle would have saved nothing before epoch 3; the forced one is pinned
    assert m["checkpoints"]["0"]["epoch"] == 1 and m["ckpt_pinned"] == [0]
    assert (m["segments"][-1]["status"], m["segments"][-1]["finished_epoch"]) == ("preempted", 1)

    flag.unlink()  # the supervisor removes it when the attempt ends
    result = train(part, TrainOptions(cpu=True, resume=True, preempt_file=str(flag), task_id="T_0002"))
    assert result.finished_epoch == 3
    m = manifest(part)
    assert "ckpt_pinned" not in m  # resumed past it: released (the fast track still keeps it here)
    assert m["segments"][-1]["status"] == "succeeded" and m["segments"][-1]["from_checkpoint"] == 0

    a, b = SavePackage.open(full).state_dict(), SavePackage.open(part).state_dict()
    for key in ("runner", "log_dict", "global_step", "finished_epoch", "rng"):
        assert_same_state(a[key], b[key], key)
    assert all(first_module(a)[k].equal(v) for k, v in first_module(b).items())


def test_a_run_preempted_in_its_last_epoch_just_finishes(tmp_path: Path) -> None:
    flag = tmp_path / "T_0003.preempt"
    pkg = SavePackage(project(tmp_path, "last", 2, flag)).save_to_new_dir()
    result = train(pkg, TrainOptions(cpu=True, preempt_file=str(flag), task_id="T_0003"))
    assert result.finished_epoch == 1
    m = manifest(pkg)
    assert m["segments"][-1]["status"] == "succeeded"
    assert [c["epoch"] for c in m["checkpoints"].values()] == [1]  # its own last save, pinned as it stopped
    assert "preempted" not in (pkg / "_output.txt").read_text()
