"""Resume: 3 epochs equal 2 epochs plus a resumed 1, bit for bit, on CPU with a fixed seed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dlnest_ray import SavePackage, TrainingFailed
from dlnest_ray.cli.project import create_project
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import assert_same_state, first_module, write_freq, write_project

CPU = TrainOptions(cpu=True)
RESUME = TrainOptions(cpu=True, resume=True)
COMPARED_KEYS = (
    "runner",
    "log_dict",
    "global_step",
    "finished_epoch",
    "life_cycle",
    "dataset",
    "seed",
    "rng",
)


def manifest(pkg: Path) -> dict:
    return json.loads((pkg / "_package.json").read_text())


def ckpt_files(pkg: Path) -> list[str]:
    return sorted(f.name for f in (pkg / "Checkpoints").iterdir())


def test_three_epochs_equal_two_plus_a_resumed_one(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=3, seed=4321)
    full = SavePackage(cfg).save_to_new_dir()
    part = SavePackage(cfg, write_freq(tmp_path / "two.json", epochs=2)).save_to_new_dir()
    assert SavePackage.open(full).seed == SavePackage.open(part).seed == 4321

    r_full = train(full, CPU)
    r_part = train(part, CPU)
    assert (r_full.finished_epoch, r_part.finished_epoch) == (2, 1)
    out_before = (part / "_output.txt").read_text()
    assert "Epoch #1 finished!" in out_before

    r_resumed = train(part, RESUME)
    assert r_resumed.finished_epoch == 2
    assert r_resumed.global_step == r_full.global_step == 12

    a = SavePackage.open(full).state_dict()
    b = SavePackage.open(part).state_dict()
    for key in COMPARED_KEYS:
        assert_same_state(a[key], b[key], key)
    # the weights themselves, explicitly
    for name, tensor in first_module(a).items():
        assert torch.equal(tensor, first_module(b)[name]), name
    assert set(a["runner"]["optimizer"]) == {"optimizer"}
    assert set(a["runner"]["scheduler"]) == {"scheduler", "plateau"}
    assert a["runner"]["scheduler"]["scheduler"]["last_epoch"] == 3  # stepped before each of the 3 saves
    # the life-cycle state was restored on resume (else the history would start at epoch 2)
    assert [h[0] for h in b["life_cycle"]["history"]] == [0, 1, 2]
    assert b["life_cycle"]["best_acc"] == max(b["log_dict"]["acc"]) > 0

    # continued at finished_epoch + 1, with the recorded seed, output appended
    seg = manifest(part)["segments"]
    assert [s["kind"] for s in seg] == ["train", "resume"]
    assert seg[1]["from_checkpoint"] == 1
    assert seg[1]["start_epoch"] == 2
    assert seg[1]["seed"] == 4321
    assert seg[1]["status"] == "succeeded" and seg[1]["finished_epoch"] == 2
    out_after = (part / "_output.txt").read_text()
    assert out_after.startswith(out_before)
    resumed_part = out_after[len(out_before) :]
    assert "resuming from checkpoint 1 (epoch 1)" in resumed_part
    assert "Epoch #2 finished!" in resumed_part
    assert "Epoch #0 finished!" not in resumed_part and "Epoch #1 finished!" not in resumed_part

    # metrics: one row per epoch, the same values as the uninterrupted run
    ma, mb = read_metrics(full).to_pylist(), read_metrics(part).to_pylist()
    assert [r["epoch"] for r in mb] == [0, 1, 2]
    assert [r["acc"] for r in ma] == [r["acc"] for r in mb]
    assert [r["step"] for r in mb] == [4, 8, 12]


def test_recorded_random_seed_is_the_seed_used(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1, seed=None)
    drawn = SavePackage(cfg).save_to_new_dir()
    seed = SavePackage.open(drawn).seed
    assert isinstance(seed, int)
    same = SavePackage(cfg, write_freq(tmp_path / "same.json", seed=seed)).save_to_new_dir()
    other = SavePackage(cfg, write_freq(tmp_path / "other.json", seed=seed + 1)).save_to_new_dir()
    for pkg in (drawn, same, other):
        train(pkg, CPU)
    w = {p: first_module(SavePackage.open(p).state_dict()) for p in (drawn, same, other)}
    assert_same_state(w[drawn], w[same], "weights")
    assert any(not torch.equal(w[drawn][k], w[other][k]) for k in w[drawn])
    assert manifest(drawn)["segments"][0]["seed"] == seed


def test_resume_from_older_checkpoint_abandons_the_newer_branch(tmp_path, monkeypatch):
    cfg = write_project(tmp_path / "proj", epochs=3)
    pkg = SavePackage(cfg).save_to_new_dir()
    monkeypatch.setenv("DLNEST_TEST_TAG", "A")
    train(pkg, CPU)
    assert ckpt_files(pkg) == ["state_0.ckpt", "state_1.ckpt", "state_2.ckpt"]

    # branch B from checkpoint 0; it dies in epoch 2, after saving its own checkpoint 1
    monkeypatch.setenv("DLNEST_TEST_TAG", "B")
    monkeypatch.setenv("DLNEST_TEST_FAIL_AT_EPOCH", "2")
    with pytest.raises(TrainingFailed):
        train(pkg, TrainOptions(cpu=True, resume=True, ckpt_id=0))
    assert ckpt_files(pkg) == ["state_0.ckpt", "state_1.ckpt"]  # the stale state_2 of branch A is gone
    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == [0, 1]
    assert opened.state_dict(1)["life_cycle"]["history"] == [[0, "A"], [1, "B"]]
    assert [r["epoch"] for r in read_metrics(pkg).to_pylist()] == [0, 1]

    # a default resume continues branch B, not the abandoned checkpoint 2
    monkeypatch.delenv("DLNEST_TEST_FAIL_AT_EPOCH")
    monkeypatch.setenv("DLNEST_TEST_TAG", "C")
    result = train(pkg, RESUME)
    assert result.finished_epoch == 2
    final = SavePackage.open(pkg).state_dict()
    assert final["life_cycle"]["history"] == [[0, "A"], [1, "B"], [2, "C"]]
    assert ckpt_files(pkg) == ["state_0.ckpt", "state_1.ckpt", "state_2.ckpt"]
    segs = manifest(pkg)["segments"]
    assert [(s["kind"], s["from_checkpoint"], s["status"]) for s in segs] == [
        ("train", None, "succeeded"),
        ("resume", 0, "failed"),
        ("resume", 1, "succeeded"),
    ]
    assert [r["epoch"] for r in read_metrics(pkg).to_pylist()] == [0, 1, 2]


def test_resume_of_unknown_checkpoint_is_refused_and_changes_nothing(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    train(pkg, CPU)
    before = (pkg / "_package.json").read_bytes()
    with pytest.raises(TrainingFailed, match="checkpoint 7 is not kept"):
        train(pkg, TrainOptions(cpu=True, resume=True, ckpt_id=7))
    assert ckpt_files(pkg) == ["state_0.ckpt"]
    after = json.loads((pkg / "_package.json").read_bytes())
    assert after["checkpoints"] == json.loads(before)["checkpoints"]


def test_blank_template_resumes_exactly(tmp_path):
    """The template users start from must keep the promise too (its LR schedule included)."""
    project = create_project(tmp_path / "blank", mnist=False)
    cfg = project / "root_config.json"
    full = SavePackage(cfg, write_freq(tmp_path / "three.json", epochs=3, seed=11)).save_to_new_dir()
    part = SavePackage(cfg, write_freq(tmp_path / "two.json", epochs=2, seed=11)).save_to_new_dir()
    train(full, CPU)
    train(part, CPU)
    train(part, RESUME)
    a = SavePackage.open(full).state_dict()
    b = SavePackage.open(part).state_dict()
    assert a["finished_epoch"] == b["finished_epoch"] == 2
    assert_same_state(a["runner"]["scheduler"], b["runner"]["scheduler"], "scheduler")
    assert_same_state(a["runner"], b["runner"], "runner")
    shutil.rmtree(project)


def test_tracks_follow_checkpoint_args(tmp_path):
    limits = {
        "max_ckpt_in_fast_track": 1,
        "max_ckpt_in_slow_track": 0,
        "dilation_in_slow_track": 1,
        "max_ckpt_in_consistent_track": 1,
    }
    cfg = write_project(tmp_path / "proj", epochs=4, checkpoint_args=limits)
    pkg = SavePackage(cfg).save_to_new_dir()
    train(pkg, CPU)
    acc = SavePackage.open(pkg).state_dict()["log_dict"]["acc"]
    best, held = 0.0, []
    for epoch, value in enumerate(acc):  # the life cycle holds a checkpoint when the accuracy improves
        if value > best:
            best, held = value, [*held, epoch]
    expected = sorted({3, held[-1]})
    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == expected
    assert ckpt_files(pkg) == [f"state_{i}.ckpt" for i in expected]
    assert opened.tracks.fast == (3,) and opened.tracks.consistent == (held[-1],)


RECORD_GLOBAL_STEP = """

_plain_run_one_step = Model.run_one_step


def _recording_run_one_step(self, data, log, iter, epoch):
    with open(self.args["global_step_file"], "a", encoding="utf-8") as f:
        f.write(f"{self.status.global_step}\\n")
    return _plain_run_one_step(self, data, log, iter, epoch)


Model.run_one_step = _recording_run_one_step
"""


def test_a_resumed_run_sees_its_global_step_from_its_first_step(tmp_path):
    """``self.status.global_step`` counts the steps before the current one, a resumed segment's first
    step included (it was 0 there, then jumped to the checkpoint's count + 1)."""
    seen = tmp_path / "steps.txt"
    cfg = write_project(tmp_path / "proj", epochs=2, extra={"global_step_file": str(seen)})
    with open(tmp_path / "proj" / "Model" / "Model.py", "a", encoding="utf-8") as f:
        f.write(RECORD_GLOBAL_STEP)
    part = SavePackage(cfg, write_freq(tmp_path / "one.json", epochs=1)).save_to_new_dir()
    train(part, CPU)
    steps = [int(x) for x in seen.read_text().split()]
    assert steps == list(range(len(steps))) and len(steps) == 4  # 128 samples, batch 32
    seen.unlink()
    (part / "args.json").write_text(json.dumps({**json.loads((part / "args.json").read_text()), "epochs": 2}))
    train(part, RESUME)
    assert [int(x) for x in seen.read_text().split()] == [4, 5, 6, 7]
