"""Sweeps, center side (issue 15), in-process with the fake launcher and two fake GPUs: a sweep's trials are
ordinary queued runs, each a package in the sweep's folder with its values in ``args.json``; bad input
creates nothing; ``del S_`` deletes every unfinished trial; a restarted center keeps the sweep; the stop
rule stops a hopeless trial (preempt → PREEMPTED report → STOPPED, its memory to waiting trials)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeLauncher
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack import layout
from dlnest_ray.savepack.metrics import MetricsLog
from dlnest_ray.savepack.package import SavePackage

from ._helpers import Clock, info, status

GRID = {"model_config.lr": "0.01,0.1", "model_config.hidden": "range(8,20,4)"}  # 2 x 3


def _log(center: Center) -> str:
    return "\n".join(center.get_dlnest_output(0)["lines"])


def _saves(project: Path) -> list[Path]:
    saves = project.parent / "Saves"
    return sorted(saves.iterdir()) if saves.exists() else []


def _epochs(center: Center, task_id: str, accs: list[float]) -> None:
    """The trial ran these epochs: its segment and one metrics row each (as rank 0 writes them)."""
    package = Path(info(center, task_id)["package"])
    pkg = SavePackage.open(package)
    if pkg.segment_of(task_id) is None:
        pkg.begin_segment({"kind": "train", "task_id": task_id})
    metrics = MetricsLog(package)
    metrics.drop_after(-1)
    for epoch, acc in enumerate(accs):
        metrics.append(epoch=epoch, step=epoch, wall_time=time.time(), log={"acc": acc}, marks={})


def _report(center: Center, task_id: str, accs: list[float]) -> None:
    _epochs(center, task_id, accs)
    center.rank_memory(task_id, 0, len(accs) - 1, None)


# ------------------------------------------------------------------------------------------ creation
def test_a_grid_sweep_queues_one_run_per_trial_with_its_values(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    sweep_id = center.sweep(str(project), space=GRID, memory_mb=4000, name="grid")
    assert sweep_id == "S_0001"
    got = center.get_sweep(sweep_id)
    rec = got.record
    assert [t.values for t in rec.trials] == [
        {"model_config.lr": lr, "model_config.hidden": h} for lr in (0.01, 0.1) for h in (8, 12, 16)
    ]
    assert [t.label for t in rec.trials][:2] == ["lr=0.01 hidden=8", "lr=0.01 hidden=12"]
    assert rec.varying == ("model_config.lr", "model_config.hidden")
    assert rec.spec["seed"] is None and rec.stop == "" and rec.name == "grid"
    folder = Path(rec.folder)
    assert folder.parent == project.parent / "Saves" and folder.name.startswith("S_0001_grid_")
    assert _saves(project) == [folder]  # one folder in the save root, the trials inside it
    assert sorted(p.name for p in folder.iterdir()) == [layout.SWEEP_FILE] + [
        f"trial_0{i}" for i in range(1, 7)
    ]
    assert (
        json.loads((folder / layout.SWEEP_FILE).read_text())["trials"][5]["task_id"] == rec.trials[5].task_id
    )
    for trial, task in zip(rec.trials, got.tasks, strict=True):
        assert task.task_id == trial.task_id and task.sweep == sweep_id and task.sweep_label == trial.label
        assert task.description == trial.label and task.memory_mb == 4000
        args = json.loads((Path(trial.package) / layout.ARGS_FILE).read_text())
        assert args["model_config"]["lr"] == trial.values["model_config.lr"]
        assert args["model_config"]["hidden"] == trial.values["model_config.hidden"]
        assert args["model_config"]["dropout"] == 0.3  # the rest of the config as it was
        meta = SavePackage.open(trial.package).meta
        assert meta["sweep"] == {"sweep_id": sweep_id, "trial": rec.trials.index(trial) + 1,
                                 "values": trial.values, "label": trial.label}  # fmt: skip
    # packed by memory like any run: 4000 MB each, best fit, 4 on a 16000 MB GPU
    assert [(r.task_id, r.gpus) for r in launcher.launched][:4] == [(t, (0,)) for t in rec.task_ids[:4]]
    assert len(launcher.launched) == 6
    assert f"{sweep_id} queued: 6 trials in {folder}" in _log(center)


def test_a_random_sweep_records_its_seed_and_gives_the_same_trials_again(
    center: Center, project: Path
) -> None:
    space = {"model_config.lr": "loguniform(1e-4,1e-1)", "model_config.hidden": "randint(4,64)"}
    first = center.get_sweep(
        center.sweep(str(project), space=space, trials=4, seed=7, placement="cpu")
    ).record
    again = center.get_sweep(
        center.sweep(str(project), space=space, trials=4, seed=7, placement="cpu")
    ).record
    assert [t.values for t in first.trials] == [t.values for t in again.trials]
    assert first.seed == 7 and len(first.trials) == 4
    chosen = center.get_sweep(center.sweep(str(project), space=space, trials=2, placement="cpu")).record
    assert isinstance(chosen.seed, int)  # none given: one is chosen and recorded
    replay = center.sweep(str(project), space=space, trials=2, seed=chosen.seed, placement="cpu")
    assert [t.values for t in center.get_sweep(replay).record.trials] == [t.values for t in chosen.trials]


def test_trials_whose_varying_keys_are_memory_neutral_follow_a_twins_peak(
    center: Center, launcher: FakeLauncher, tmp_path: Path
) -> None:
    from tests.projects import write_project

    cfg = write_project(tmp_path / "neutral", extra={"memory_neutral_keys": ["epochs", "seed", "lr"]})
    sweep_id = center.sweep(str(cfg), space={"model_config.lr": "0.1,0.2,0.3,0.4"})
    tasks = center.get_sweep(sweep_id).tasks
    assert len({t.fingerprint for t in tasks}) == 1  # lr does not change memory: they are twins
    first, *rest = [t.task_id for t in tasks]
    waiting = [t for t in rest if status(center, t) == "PENDING"]
    assert len(waiting) == 2  # 90% of a GPU each while nothing is known: one per GPU
    center.rank_memory(first, 0, 0, 1000)  # the first trial measured its peak: the others follow it
    for t in waiting:
        row = info(center, t)
        assert row["status"] == "RUNNING" and row["memory_source"].startswith(f"running twin {first}")
        assert row["mb_per_gpu"] == 1150  # peak x margin 1.15: they now share the cards


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("space", "kw", "says"),
    [
        ({"model_config.lr": "loguniform(0,1)"}, {"trials": 2}, "0 < low < high"),
        ({"model_config.lr": "range(5,1)"}, {}, "is empty"),
        ({}, {}, "empty sweep"),
        ({"model_config.lrr": "1,2"}, {}, "not in the config: model_config.lrr"),
        ({"model_config.lr": "1,2"}, {"trials": 0}, "from 1 to"),
        ({"model_config.lr": "uniform(0,1)"}, {}, "need a trial count"),
        ({"model_config.lr": "1,2"}, {"stop": "median:acc"}, "stop rule"),
        ({"save_root": "a,b"}, {}, "sets root_file_path, save_root, child_jsons itself"),
        ({"model_config.lr": "1,2"}, {"placement": "gpu", "memory_mb": 99999}, "can never run here"),
        ({"model_config.lr": "1,2"}, {"name": "a/b"}, "invalid package name"),
    ],
)
def test_bad_input_creates_nothing(
    center: Center,
    launcher: FakeLauncher,
    project: Path,
    space: dict[str, str],
    kw: dict[str, Any],
    says: str,
) -> None:
    with pytest.raises(DlnestError) as e:
        center.sweep(str(project), space=space, **kw)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert _saves(project) == [] and center.get_task_info(include_finished=True) == []
    assert center.get_sweeps() == [] and launcher.launched == []


def test_new_keys_adds_keys_the_config_lacks(center: Center, project: Path) -> None:
    sweep_id = center.sweep(
        str(project), space={"model_config.extra.depth": "1,2"}, new_keys=True, placement="cpu"
    )
    trial = center.get_sweep(sweep_id).record.trials[1]
    assert json.loads((Path(trial.package) / layout.ARGS_FILE).read_text())["model_config"]["extra"] == {
        "depth": 2
    }


def test_a_failure_half_way_removes_what_was_made(
    center: Center, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SavePackage.save_to_new_dir
    calls = []

    def flaky(self: SavePackage, *a: Any, **kw: Any) -> Path:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, *a, **kw)

    monkeypatch.setattr(SavePackage, "save_to_new_dir", flaky)
    with pytest.raises(OSError, match="disk full"):
        center.sweep(str(project), space=GRID, placement="cpu")
    assert _saves(project) == [] and center.get_task_info(include_finished=True) == []


# ------------------------------------------------------------------------------------------ del S_
def test_del_sweep_deletes_every_unfinished_trial(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    sweep_id = center.sweep(str(project), space=GRID, memory_mb=9000)  # one per GPU: 2 run, 4 wait
    ids = center.get_sweep(sweep_id).record.task_ids
    center.task_finished(ids[0], "SUCCEEDED")  # one ended: the next took its place
    running = [t for t in ids if status(center, t) == "RUNNING"]
    assert len(running) == 2
    said = center.del_task(sweep_id)
    assert said == f"{sweep_id}: 3 trial(s) removed from the queue, 2 being stopped, 1 had ended"
    assert sorted(launcher.cancelled) == sorted(running)
    for t in running:
        center.task_finished(t, "CANCELLED")
    assert [status(center, t) for t in ids] == ["SUCCEEDED"] + ["CANCELLED"] * 5
    assert center.get_sweep(sweep_id).done
    with pytest.raises(DlnestError, match="no sweep 'S_0009'"):
        center.del_task("S_0009")


# ------------------------------------------------------------------------------------------ restart
def test_a_restarted_center_keeps_the_sweep_and_its_rule(
    make_center: Callable[..., Center], launcher: FakeLauncher, project: Path, clock: Clock
) -> None:
    first = make_center()
    sweep_id = first.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10,0.03"}, memory_mb=8000, stop="median:acc:max"
    )
    before = first.get_sweep(sweep_id)
    ids = before.record.task_ids
    assert [status(first, t) for t in ids] == ["RUNNING"] * 4
    again = make_center()  # the same home: the supervisors live on
    after = again.get_sweep(sweep_id)
    assert after.record == before.record and [t.task_id for t in after.tasks] == ids
    assert again.sweep(str(project), space={"model_config.lr": "1"}, placement="cpu") == "S_0002"
    for t, acc in zip(ids, (0.9, 0.9, 0.1, 0.9), strict=True):  # the good ones alike
        _epochs(again, t, [acc])
    again.rank_memory(ids[3], 0, 0, None)
    assert launcher.preempted == [ids[2]]  # the new center applies the rule too


# ------------------------------------------------------------------------------------------ stopping
def test_the_median_rule_stops_a_hopeless_trial_which_ends_stopped_and_frees_its_memory(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    space = {"model_config.lr": "0.01,0.02,10,0.03,0.04"}
    sweep_id = center.sweep(str(project), space=space, memory_mb=8000, stop="median:acc:max")
    ids = center.get_sweep(sweep_id).record.task_ids
    good, bad, waiting = [ids[0], ids[1], ids[3]], ids[2], ids[4]
    assert status(center, waiting) == "PENDING"  # 2 GPUs x 2 trials of 8000 MB
    _report(center, ids[0], [0.90])
    _report(center, bad, [0.10])  # only one other trial reached epoch 1: no decision yet
    assert launcher.preempted == []
    _report(center, ids[1], [0.90])
    assert launcher.preempted == [bad]  # judged once two others had reached its epoch
    row = info(center, bad)
    assert row["status"] == "RUNNING" and row["stop_reason"].startswith(
        "median stopping at epoch 1: best acc 0.1"
    )
    assert f"{bad} stopped early by median rule: median stopping at epoch 1" in _log(center)
    _report(center, ids[3], [0.90])  # (a good trial below the others' median would be stopped too)
    _report(center, ids[0], [0.90, 0.93])
    assert launcher.preempted == [bad]  # a good trial is never stopped, the bad one told once
    center.task_finished(bad, "PREEMPTED")  # it stopped at its epoch's end, after a checkpoint
    row = info(center, bad)
    assert row["status"] == "STOPPED" and row["error"] == row["stop_reason"]
    assert status(center, waiting) == "RUNNING"  # its memory went to the waiting trial
    rec = center.get_sweep(sweep_id).record
    assert [(s.task_id, s.reason) for s in rec.stops] == [(bad, row["stop_reason"])]
    for t in good:
        assert status(center, t) == "RUNNING" and info(center, t)["stop_reason"] == ""


def test_a_stopped_trial_that_finished_anyway_succeeds(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    sweep_id = center.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10"}, memory_mb=4000, stop="median:acc:max"
    )
    a, b, bad = center.get_sweep(sweep_id).record.task_ids
    for t, acc in ((a, 0.9), (b, 0.9), (bad, 0.1)):
        _report(center, t, [acc])
    assert launcher.preempted == [bad]
    center.task_finished(bad, "SUCCEEDED")  # its last epoch ended before the word came
    assert status(center, bad) == "SUCCEEDED"


def test_a_stopped_trial_can_be_continued(center: Center, launcher: FakeLauncher, project: Path) -> None:
    import torch

    sweep_id = center.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10"}, memory_mb=4000, stop="median:acc:max"
    )
    a, b, bad = center.get_sweep(sweep_id).record.task_ids
    for t, acc in ((a, 0.9), (b, 0.9), (bad, 0.1)):
        _report(center, t, [acc])
    pkg = SavePackage.open(info(center, bad)["package"])
    pkg.save_checkpoint({"w": torch.zeros(2), "finished_epoch": 1}, epoch=1, step=8, pin=True)
    center.task_finished(bad, "PREEMPTED")
    assert status(center, bad) == "STOPPED"
    again = center.continue_train(info(center, bad)["package"], memory_mb=4000)
    row = info(center, again)
    assert (row["resume"], row["sweep"], row["package"]) == (True, "", info(center, bad)["package"])


def test_a_waiting_trial_with_a_curve_is_stopped_at_once(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    sweep_id = center.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10,0.03"}, memory_mb=16000, stop="median:acc:max"
    )
    a, b, bad, d = center.get_sweep(sweep_id).record.task_ids
    _epochs(center, bad, [0.1])  # it ran an epoch before (say it was preempted) and waits again
    center._set(center._get(bad).__class__.from_json({**center._get(bad).to_json(), "resume": True}))
    for t in (a, b):
        _report(center, t, [0.9])
    row = info(center, bad)
    assert row["status"] == "STOPPED" and row["error"].startswith("median stopping at epoch 1")
    assert bad not in launcher.preempted and status(center, d) == "PENDING"


def test_a_trial_told_to_stop_across_a_restart_is_told_again_and_ends_stopped(
    make_center: Callable[..., Center], launcher: FakeLauncher, project: Path
) -> None:
    first = make_center()
    sweep_id = first.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10"}, memory_mb=4000, stop="median:acc:max"
    )
    a, b, bad = first.get_sweep(sweep_id).record.task_ids
    for t, acc in ((a, 0.9), (b, 0.9), (bad, 0.1)):
        _report(first, t, [acc])
    assert launcher.preempted == [bad]
    second = make_center()  # its supervisor lives on: the word may have been lost, it is told again
    assert launcher.preempted == [bad, bad] and status(second, bad) == "RUNNING"
    pkg = SavePackage.open(info(second, bad)["package"])
    pkg.end_segment(0, status="preempted", finished_epoch=1)
    launcher.running.discard(bad)  # it stopped and its supervisor ended while no center was up
    third = make_center()
    row = info(third, bad)
    assert row["status"] == "STOPPED" and row["error"].startswith("median stopping")
    assert f"{bad} STOPPED (found after a restart): median stopping" in _log(third)
    assert launcher.preempted == [bad, bad] and status(third, a) == "RUNNING"


def test_a_rule_on_a_metric_no_trial_records_is_said_once(
    center: Center, launcher: FakeLauncher, project: Path
) -> None:
    sweep_id = center.sweep(
        str(project), space={"model_config.lr": "0.01,0.02,10"}, memory_mb=4000, stop="median:f1:max"
    )
    for t in center.get_sweep(sweep_id).record.task_ids:
        _report(center, t, [0.5])  # they record acc only
        _report(center, t, [0.5, 0.6])
    said = [line for line in _log(center).splitlines() if "cannot judge" in line]
    assert len(said) == 1 and f"{sweep_id}: its trials record no 'f1'" in said[0]
    assert launcher.preempted == []
