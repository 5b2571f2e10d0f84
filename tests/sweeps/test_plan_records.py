"""The sweep pieces around the pure core (issue 15): a sweep checked against its config and expanded
(:mod:`dlnest_ray.sweeps.plan`), the records the center keeps (:mod:`dlnest_ray.sweeps.records`) and the
ranking ``compare S_0001`` shows (:mod:`dlnest_ray.sweeps.ranking`)."""

from __future__ import annotations

import json
import math

import pytest

from dlnest_ray.sweeps.plan import plan_sweep, spec_from_request
from dlnest_ray.sweeps.ranking import TrialData, rank_trials
from dlnest_ray.sweeps.records import SweepInfo, SweepRecord, SweepStop, SweepTrial, is_sweep_id
from dlnest_ray.sweeps.space import SweepError
from dlnest_ray.tasks import TaskRecord, TaskStatus

CONFIG = {"epochs": 3, "model_config": {"lr": 0.1, "hidden": 16}, "save_root": "./Saves"}


# ------------------------------------------------------------------------------------------ plan
def test_a_grid_plan_has_labels_of_the_varying_keys_only() -> None:
    spec = spec_from_request(
        {"model_config.lr": "0.1,0.01", "model_config.hidden": [16], "epochs": "range(2,4)"}
    )
    plan = plan_sweep(spec, CONFIG)
    assert plan.varying == ("model_config.lr", "epochs")
    assert plan.labels == ("lr=0.1 epochs=2", "lr=0.1 epochs=3", "lr=0.01 epochs=2", "lr=0.01 epochs=3")
    assert plan.spec.seed is None and plan.rule is None
    assert plan.config_of(CONFIG, 3)["model_config"] == {"lr": 0.01, "hidden": 16}
    assert CONFIG["model_config"]["lr"] == 0.1  # the config itself is untouched


def test_a_single_trial_is_labelled_with_all_its_keys() -> None:
    plan = plan_sweep(spec_from_request({"model_config.lr": "0.5"}), CONFIG)
    assert plan.varying == () and plan.labels == ("lr=0.5",)


def test_drawn_trials_get_a_recorded_seed_and_replay_with_it() -> None:
    spec = spec_from_request({"model_config.lr": "loguniform(1e-4,1e-1)"}, trials=3)
    first = plan_sweep(spec, CONFIG)
    assert isinstance(first.spec.seed, int)
    again = plan_sweep(
        spec_from_request({"model_config.lr": "loguniform(1e-4,1e-1)"}, trials=3, seed=first.spec.seed),
        CONFIG,
    )
    assert again.assignments == first.assignments
    assert first.spec.to_dict()["seed"] == first.spec.seed


@pytest.mark.parametrize(
    ("space", "kw", "says"),
    [
        ({"model_config.width": "1,2"}, {}, "not in the config: model_config.width"),
        ({"model_config.lr.x": "1,2"}, {"new_keys": True}, "'model_config.lr' holds 0.1 (float)"),
        ({"save_root": "a,b"}, {}, "dlnest-ray sets root_file_path, save_root, child_jsons itself"),
        ({"model_config.lr": "1,2"}, {"stop": "mean:acc:max"}, "unknown rule 'mean'"),
        ({"model_config.lr": ("1", "2")}, {}, "give a SPEC string or a list of values"),
    ],
)
def test_bad_plans_say_why_in_one_line(space: dict[str, object], kw: dict[str, object], says: str) -> None:
    with pytest.raises(SweepError) as e:
        plan_sweep(spec_from_request(space, **kw), CONFIG)  # type: ignore[arg-type]
    assert says in str(e.value) and "\n" not in str(e.value)


def test_new_keys_may_add_keys_and_the_rule_is_parsed() -> None:
    plan = plan_sweep(
        spec_from_request({"extra.depth": "1,2"}, new_keys=True, stop="median:acc:max@2"), CONFIG
    )
    assert plan.config_of(CONFIG, 1)["extra"] == {"depth": 2}
    assert plan.rule is not None and plan.rule.describe() == "median:acc:max@2"


# ------------------------------------------------------------------------------------------ records
def _record() -> SweepRecord:
    return SweepRecord(
        sweep_id="S_0003",
        name="lrs",
        config_path="/p/root_config.json",
        folder="/p/Saves/S_0003_lrs_x",
        spec={"space": {"model_config.lr": [0.1, 0.01]}, "trials": None, "seed": 5, "stop": None},
        stop="median:acc:max@1",
        trials=(
            SweepTrial(task_id="T_0004", values={"model_config.lr": 0.1}, label="lr=0.1", package="/p/a"),
            SweepTrial(task_id="T_0005", values={"model_config.lr": 0.01}, label="lr=0.01", package="/p/b"),
        ),
        varying=("model_config.lr",),
        created_at=12.5,
        stops=(SweepStop(task_id="T_0005", reason="median stopping at epoch 1", at=20.0),),
    )


def test_a_sweep_record_round_trips_through_json() -> None:
    rec = _record()
    assert SweepRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert rec.task_ids == ["T_0004", "T_0005"] and rec.seed == 5
    assert rec.trial("T_0005") == rec.trials[1] and rec.trial("T_0009") is None


def test_sweep_info_counts_and_round_trips() -> None:
    tasks = (
        TaskRecord(
            task_id="T_0004", package="/p/a", submitted_at=1.0, status=TaskStatus.SUCCEEDED, sweep="S_0003"
        ),
        TaskRecord(
            task_id="T_0005", package="/p/b", submitted_at=1.0, status=TaskStatus.STOPPED, sweep="S_0003"
        ),
    )
    info = SweepInfo(record=_record(), tasks=tasks)
    assert info.counts() == {"SUCCEEDED": 1, "STOPPED": 1} and info.done
    back = SweepInfo.from_json(json.loads(json.dumps(info.to_json())))
    assert back == info


def test_sweep_ids_are_neither_task_ids_nor_paths() -> None:
    assert is_sweep_id("S_0001") and is_sweep_id("S_12345")
    assert not any(is_sweep_id(x) for x in ("T_0001", "S_", "S_1a", "Saves/S_0001", "s_0001"))


# ------------------------------------------------------------------------------------------ ranking
def _trial(task_id: str, *values: float | None) -> TrialData:
    return TrialData(task_id=task_id, values={}, points=tuple(enumerate(values)))


def test_trials_rank_by_their_best_value_best_first_and_unstarted_last() -> None:
    trials = [
        _trial("T_1", 0.5, 0.7),
        _trial("T_2", 0.9, 0.2),  # its best counts, not its last
        _trial("T_3"),  # never recorded a value
        _trial("T_4", math.nan, 0.6, None),  # NaN and gaps skipped
        _trial("T_5", 0.7),  # ties keep trial order
    ]
    ranked = rank_trials(trials, "max")
    assert [(r.trial.task_id, r.rank, r.best, r.best_epoch) for r in ranked] == [
        ("T_2", 1, 0.9, 0),
        ("T_1", 2, 0.7, 1),
        ("T_5", 3, 0.7, 0),
        ("T_4", 4, 0.6, 1),
        ("T_3", None, None, None),
    ]
    assert [(r.final, r.epochs) for r in ranked] == [(0.2, 2), (0.7, 2), (0.7, 1), (0.6, 3), (None, 0)]
    assert [r.trial.task_id for r in rank_trials(trials, "min")][:2] == ["T_2", "T_1"]  # 0.2, 0.5
