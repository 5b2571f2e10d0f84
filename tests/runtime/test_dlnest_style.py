"""A project written exactly to DLNest's coding guide (camelCase) trains, checkpoints and resumes, and its
hooks run in DLNest's order; a ``before`` hook returning "Skip" skips its stage."""

from __future__ import annotations

import json

import dlnest_ray
from dlnest_ray import SavePackage
from dlnest_ray.runtime.trainer import TrainOptions, train
from tests.projects import DLNEST_HOOK_ORDER, assert_same_state, read_hooks, write_freq, write_project

CPU = TrainOptions(cpu=True)
STEPS = 4  # 128 samples, batch 32
PROLOGUE = ["BAll", "BDatasetInit", "ADatasetInit", "BModelInit", "AModelInit", "BTrain"]
EPILOGUE = ["ATrain", "AAll"]


def epoch_hooks(
    *,
    visualize_every: int | None = None,
    skipped_steps: tuple[int, ...] = (),
    validate: bool = True,
    validation: tuple[str, ...] = ("model.validate",),
) -> list[str]:
    seq = ["BOneEpoch"]
    for it in range(STEPS):
        seq += ["BModelOneStep", "AModelOneStep"]
        if visualize_every and it % visualize_every == 0:
            seq += ["BVisualize", "model.visualize", "AVisualize"]
    seq += ["commandLineOutput", "BValidation", *(validation if validate else ()), "AValidation"]
    seq += ["BSaveModel", "ASaveModel", "AOneEpoch"]
    return seq


def test_hooks_run_in_dlnest_order(tmp_path):
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", style="camel", epochs=2, hook_file=hooks, visualize_every=2)
    pkg = SavePackage(cfg).save_to_new_dir()
    result = train(pkg, CPU)
    assert (result.finished_epoch, result.global_step) == (1, 2 * STEPS)
    expected = PROLOGUE + epoch_hooks(visualize_every=2) * 2 + EPILOGUE
    assert read_hooks(hooks) == expected
    first_seen = list(dict.fromkeys(h for h in read_hooks(hooks) if h in DLNEST_HOOK_ORDER))
    assert first_seen == list(DLNEST_HOOK_ORDER)
    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == [0, 1]
    state = opened.state_dict()
    assert state["finished_epoch"] == 1
    assert set(state["runner"]) == {"model", "optimizer", "scheduler", "plateau"}  # the user's getSaveDict
    assert state["life_cycle"]["finished_epochs"] == [0, 1]
    assert state["life_cycle"]["max_acc"] == max(state["log_dict"]["acc"]) > 0
    assert len(state["log_dict"]["loss"]) == 2 * STEPS
    out = (pkg / "_output.txt").read_text()
    assert "Epoch #0 finished!" in out and "Epoch #1 finished!" in out


def test_dlnest_names_see_the_cpu_environment(tmp_path):
    cfg = write_project(tmp_path / "proj", style="camel", epochs=1)
    pkg = SavePackage(cfg).save_to_new_dir()
    train(pkg, CPU)

    def exp(self):
        return self.model.envTypeSeen, self.model.rankSeen

    seen = dlnest_ray.analyze(recordPath=pkg, expFunc=exp)
    assert seen == ("CPU", -1)


def test_skip_skips_only_that_stage(tmp_path):
    hooks = tmp_path / "hooks.txt"
    skip = {"BOneEpoch": [1], "BModelOneStep": [0], "BValidation": [1], "BSaveModel": [1]}
    cfg = write_project(tmp_path / "proj", style="camel", epochs=2, hook_file=hooks, skip=skip)
    pkg = SavePackage(cfg).save_to_new_dir()
    result = train(pkg, CPU)
    # epoch 0 runs (its first step skipped); the next BOneEpoch is skipped: AOneEpoch follows at once and
    # the epoch is not counted; epoch 1 then runs without validation and without a checkpoint.
    expected = PROLOGUE + epoch_hooks() + ["BOneEpoch", "AOneEpoch"] + epoch_hooks(validate=False) + EPILOGUE
    assert read_hooks(hooks) == expected
    assert result.finished_epoch == 1
    assert result.global_step == 2 * STEPS - 1  # one step skipped
    opened = SavePackage.open(pkg)
    assert opened.checkpoint_ids() == [0]  # BSaveModel skipped the second save
    state = opened.state_dict()
    assert len(state["log_dict"]["loss"]) == STEPS - 1
    assert len(state["log_dict"]["acc"]) == 1


def test_skipping_train_and_all(tmp_path):
    hooks = tmp_path / "train.txt"
    cfg = write_project(tmp_path / "a", style="camel", epochs=2, hook_file=hooks, skip={"BTrain": [0]})
    pkg = SavePackage(cfg).save_to_new_dir()
    result = train(pkg, CPU)
    assert read_hooks(hooks) == [*PROLOGUE, "ATrain", "AAll"]
    assert (result.finished_epoch, result.global_step) == (-1, 0)
    assert SavePackage.open(pkg).checkpoint_ids() == []

    hooks_all = tmp_path / "all.txt"
    cfg = write_project(tmp_path / "b", style="camel", epochs=2, hook_file=hooks_all, skip={"BAll": [0]})
    pkg = SavePackage(cfg).save_to_new_dir()
    train(pkg, CPU)
    assert read_hooks(hooks_all) == ["BAll", "AAll"]
    assert not (pkg / "metrics.parquet").exists()


def test_camel_project_resumes_with_state_restored_after_ball(tmp_path):
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", style="camel", epochs=3, seed=77)
    full = SavePackage(cfg).save_to_new_dir()
    freq = write_freq(tmp_path / "two.json", epochs=2, test={"hook_file": str(hooks)})
    part = SavePackage(cfg, freq).save_to_new_dir()
    train(full, CPU)
    train(part, CPU)
    hooks.unlink()
    result = train(part, TrainOptions(cpu=True, resume=True))
    assert result.finished_epoch == 2
    # the resumed segment runs one epoch, with every hook of the set-up again
    assert read_hooks(hooks) == PROLOGUE + epoch_hooks() + EPILOGUE

    a = SavePackage.open(full).state_dict()
    b = SavePackage.open(part).state_dict()
    # BAll resets maxAcc and the epoch list, as DLNest's template does; the restored state must win
    assert b["life_cycle"]["finished_epochs"] == [0, 1, 2]
    for key in ("runner", "log_dict", "life_cycle", "global_step", "finished_epoch"):
        assert_same_state(a[key], b[key], key)
    segs = json.loads((part / "_package.json").read_text())["segments"]
    assert segs[-1]["start_epoch"] == 2 and segs[-1]["from_checkpoint"] == 1


def test_dlnest_three_phase_validation(tmp_path):
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", style="camel", epochs=1, hook_file=hooks, validation="three_phase")
    pkg = SavePackage(cfg).save_to_new_dir()
    train(pkg, CPU)
    phases = ("model.validationInit", "model.validationAnalyze")
    assert read_hooks(hooks) == PROLOGUE + epoch_hooks(validation=phases) + EPILOGUE
    acc = SavePackage.open(pkg).state_dict()["log_dict"]["acc"]
    assert len(acc) == 1 and 0 < acc[0] <= 1
