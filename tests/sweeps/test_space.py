"""Sweep spaces: the SPEC grammar, sweep files, expansion into trials (grid and seeded draws), and the
dotted-key operations on configs. Every bad input is one SweepError line that names the problem."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlnest_ray.errors import DlnestError
from dlnest_ray.sweeps.space import (
    MAX_TRIALS,
    Choices,
    LogUniform,
    RandInt,
    Range,
    SweepError,
    SweepSpec,
    Uniform,
    apply,
    check_keys,
    expand,
    load_sweep_file,
    merge_cli,
    parse_assignments,
    parse_spec,
    trial_label,
    varying_keys,
)


def spec(*items: str, **options: Any) -> SweepSpec:
    return SweepSpec(space=parse_assignments(items), **options)


def error(call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the SweepError ``call`` raises; it must be one line."""
    with pytest.raises(SweepError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, DlnestError)
    return message


def exact(values: Any) -> str:
    return json.dumps(values)  # tells 1, 1.0 and true apart, which == does not


# --- parse_spec ---------------------------------------------------------------------------------------


def test_choices_are_json_typed() -> None:
    dim = parse_spec("k", '1,2.5,true,"x",[1,2],null')
    assert isinstance(dim, Choices)
    assert exact(dim.values) == exact([1, 2.5, True, "x", [1, 2], None])


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("adam,sgd", ["adam", "sgd"]),
        (" adam , sgd ", ["adam", "sgd"]),
        ('"a,b",c', ["a,b", "c"]),
        ("[1,2],[3,4]", [[1, 2], [3, 4]]),
        ('{"a":1},x', [{"a": 1}, "x"]),
        (".5,1e-4,-3", [0.5, 0.0001, -3]),
        ("0.1", [0.1]),
        ("relu", ["relu"]),
        ('"range(1,2)"', ["range(1,2)"]),
    ],
)
def test_choices_split_on_top_level_commas(text: str, values: list[Any]) -> None:
    dim = parse_spec("k", text)
    assert isinstance(dim, Choices)
    assert exact(dim.values) == exact(values)
    assert not dim.is_random


def test_int_ranges_follow_python() -> None:
    for text, expected in [
        ("range(1,10,2)", range(1, 10, 2)),
        ("range(4)", range(4)),
        ("range(5,0,-2)", range(5, 0, -2)),
    ]:
        dim = parse_spec("k", text)
        assert isinstance(dim, Range)
        assert [dim.value_at(i) for i in range(dim.size)] == list(expected)
        assert all(type(dim.value_at(i)) is int for i in range(dim.size))


def test_float_ranges_count_in_decimal() -> None:
    dim = parse_spec("k", "range(0,1,0.1)")
    assert isinstance(dim, Range)
    assert [dim.value_at(i) for i in range(dim.size)] == [i / 10 for i in range(10)]
    assert dim.value_at(3) == 0.3  # not 0.30000000000000004
    assert parse_spec("k", "range(0,1,0.3)") == Range(0, 1, 0.3)
    assert Range(0, 1, 0.3).size == 4  # 0, .3, .6, .9


def test_random_specs() -> None:
    assert parse_spec("k", "uniform(0,1)") == Uniform(0, 1)
    assert parse_spec("k", "loguniform(1e-4,1e-1)") == LogUniform(0.0001, 0.1)
    assert parse_spec("k", "randint(1,6)") == RandInt(1, 6)
    assert all(parse_spec("k", t).is_random for t in ("uniform(0,1)", "loguniform(1,2)", "randint(0,1)"))


@pytest.mark.parametrize(
    "text",
    [
        "1,2.5,true,x,[1,2]",
        "adam,sgd",
        '"a,b",c',
        '"",null',
        "range(1,10,2)",
        "range(0,1,0.1)",
        "range(5,0,-1)",
        "uniform(-1,2.5)",
        "loguniform(0.0001,0.1)",
        "randint(1,6)",
    ],
)
def test_describe_gives_the_spec_back(text: str) -> None:
    dim = parse_spec("k", text)
    again = parse_spec("k", dim.describe())
    assert again == dim
    if isinstance(dim, Choices):
        assert isinstance(again, Choices)
        assert exact(again.values) == exact(dim.values)


json_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.lists(st.integers(0, 9), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5, unique_by=exact))
def test_any_choices_round_trip_through_describe(values: list[Any]) -> None:
    dim = parse_spec("k", Choices(tuple(values)).describe())
    assert isinstance(dim, Choices)
    assert exact(dim.values) == exact(values)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("loguniform(0,1)", "loguniform(0,1) needs 0 < low < high"),
        ("loguniform(1e-3,1e-4)", "needs 0 < low < high"),
        ("range(5,1)", "range(5,1) is empty"),
        ("range(0,5,-1)", "is empty"),
        ("range(0,5,0)", "step 0"),
        ("range(a,5)", "plain numbers"),
        ("range(1,2,3,4)", "plain numbers"),
        ("uniform(2,1)", "needs low < high"),
        ("uniform(0)", "uniform(low,high)"),
        ("randint(1,2.5)", "needs integers"),
        ("randint(3,1)", "low <= high"),
        ("", "no values given"),
        ("   ", "no values given"),
        ("a,,b", "empty value"),
        ("a,", "empty value"),
        ("a,a", 'value "a" is given twice'),
        ("[1,2", "unclosed bracket"),
        ("1]", "unbalanced"),
        ('"abc', "unterminated string"),
        ("[1,2,]", "not valid JSON"),
        ("normal(0,1)", "looks like a call"),
        ("1,uniform(0,1)", "looks like a call"),
        ("NaN", "NaN is not a JSON value"),
        ("1e999", "too large"),
    ],
)
def test_bad_specs_name_the_key_and_the_problem(text: str, problem: str) -> None:
    message = error(parse_spec, "model_config.lr", text)
    assert message.startswith("sweep key 'model_config.lr': ")
    assert problem in message


# --- parse_assignments and SweepSpec ------------------------------------------------------------------


def test_assignments_keep_their_order() -> None:
    space = parse_assignments(["model_config.lr=0.1,0.01", "model_config.opt=adam,sgd", "b=x=y"])
    assert list(space) == ["model_config.lr", "model_config.opt", "b"]
    b = space["b"]
    assert isinstance(b, Choices)
    assert b.values == ("x=y",)  # only the first '=' splits


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        (["model_config.lr"], "has no '='"),
        (["=1,2"], "is not a dotted config key"),
        (["a..b=1"], "is not a dotted config key"),
        (["a.=1"], "is not a dotted config key"),
        (["lr=1,2", "lr=3"], "sweep key 'lr' is given twice"),
        (["lr=1,2", " lr =3"], "sweep key 'lr' is given twice"),
    ],
)
def test_bad_assignments(items: list[str], problem: str) -> None:
    assert problem in error(parse_assignments, items)


def test_bad_sweeps() -> None:
    assert "empty sweep" in error(SweepSpec, space={})
    assert "trial count must be from 1" in error(spec, "a=1,2", trials=0)
    assert "got 0" in error(spec, "a=1,2", trials=0)
    assert "trial count must be from 1" in error(spec, "a=uniform(0,1)", trials=MAX_TRIALS + 1)
    assert "must be an integer" in error(spec, "a=1,2", trials=True)
    assert "overlap" in error(spec, "model_config=1", "model_config.lr=1,2")
    assert "'a' and 'a.b' overlap" in error(spec, "a.b=1", "a-x=1", "a=1")


# --- expand -------------------------------------------------------------------------------------------


def test_grid_is_the_product_with_the_last_key_fastest() -> None:
    trials = expand(spec("a.x=1,2", "b=x,y,z"))
    assert trials == [
        {"a.x": 1, "b": "x"},
        {"a.x": 1, "b": "y"},
        {"a.x": 1, "b": "z"},
        {"a.x": 2, "b": "x"},
        {"a.x": 2, "b": "y"},
        {"a.x": 2, "b": "z"},
    ]
    assert len(expand(spec("a=range(3)", "b=range(0,1,0.25)", "c=p"))) == 3 * 4 * 1


def test_grid_trials_share_no_lists() -> None:
    trials = expand(spec("a=[1,2]", "b=1,2"))
    trials[0]["a"].append(3)
    assert trials[1]["a"] == [1, 2]


def test_a_grid_above_the_cap_is_refused() -> None:
    assert "more than 10000" in error(expand, spec("a=range(200)", "b=range(100)"))


def test_trials_draw_distinct_grid_points_in_grid_order() -> None:
    grid = expand(spec("a=1,2,3", "b=x,y"))
    drawn = expand(spec("a=1,2,3", "b=x,y", trials=4, seed=7))
    assert len(drawn) == 4
    assert [grid.index(t) for t in drawn] == sorted({grid.index(t) for t in drawn})
    assert drawn == expand(spec("a=1,2,3", "b=x,y", trials=4, seed=7))
    assert "only 6 points" in error(expand, spec("a=1,2,3", "b=x,y", trials=7, seed=0))


def test_random_sweeps_need_a_trial_count() -> None:
    message = error(expand, spec("lr=loguniform(1e-4,1e-1)", "opt=adam,sgd"))
    assert "lr=loguniform(0.0001,0.1)" in message
    assert "--trials" in message


def test_drawing_without_a_seed_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="seed"):
        expand(spec("lr=uniform(0,1)", trials=2))
    assert spec("lr=uniform(0,1)", trials=2).samples
    assert not spec("a=1,2").samples


def test_seeded_draws_repeat_and_differ_by_seed() -> None:
    items = ("lr=loguniform(1e-4,1e-1)", "opt=adam,sgd,rmsprop", "layers=randint(1,8)", "w=range(0,1,0.1)")
    first = expand(spec(*items, trials=20, seed=3))
    assert first == expand(spec(*items, trials=20, seed=3))
    assert first != expand(spec(*items, trials=20, seed=4))
    assert len(first) == 20
    for trial in first:
        assert list(trial) == ["lr", "opt", "layers", "w"]
        assert type(trial["lr"]) is float and 1e-4 <= trial["lr"] <= 1e-1
        assert trial["opt"] in ("adam", "sgd", "rmsprop")
        assert type(trial["layers"]) is int and 1 <= trial["layers"] <= 8
        assert trial["w"] in [i / 10 for i in range(10)]


def test_loguniform_is_spread_over_the_logarithm() -> None:
    values = [t["lr"] for t in expand(spec("lr=loguniform(1e-4,1)", trials=2000, seed=0))]
    assert all(1e-4 <= v <= 1 for v in values)
    # half the draws below the geometric mean 1e-2 (a uniform draw would put its median near 0.5)
    assert abs(math.log10(statistics.median(values)) + 2) < 0.15
    assert 0.2 < sum(v < 1e-3 for v in values) / len(values) < 0.3  # one decade of four


def test_randint_includes_both_ends_and_uniform_stays_inside() -> None:
    trials = expand(spec("n=randint(1,3)", "u=uniform(-1,1)", trials=300, seed=1))
    assert {t["n"] for t in trials} == {1, 2, 3}
    assert all(-1 <= t["u"] <= 1 for t in trials)
    assert len({t["u"] for t in trials}) == 300


# --- sweep files --------------------------------------------------------------------------------------

EXAMPLE = {
    "space": {"model_config.lr": "loguniform(1e-4,1e-1)", "model_config.opt": ["adam", "sgd"]},
    "trials": 8,
    "seed": 0,
    "stop": "median:acc:max@2",
}


def test_sweep_file() -> None:
    loaded = load_sweep_file(json.dumps(EXAMPLE), source="sweep.json")
    assert list(loaded.space) == ["model_config.lr", "model_config.opt"]
    assert loaded.space["model_config.lr"] == LogUniform(1e-4, 1e-1)
    assert loaded.space["model_config.opt"] == Choices(("adam", "sgd"))
    assert (loaded.trials, loaded.seed, loaded.stop, loaded.new_keys) == (8, 0, "median:acc:max@2", False)
    assert len(expand(loaded)) == 8


def test_a_list_is_choices_even_of_spec_looking_strings() -> None:
    loaded = load_sweep_file('{"space": {"a": ["range(1,3)", [1, 2]], "b": 0.5}}', source="s.json")
    assert exact(expand(loaded)) == exact([{"a": "range(1,3)", "b": 0.5}, {"a": [1, 2], "b": 0.5}])


def test_to_dict_reads_back_equal() -> None:
    original = spec("a.b=1,[2]", "c=range(0,1,0.5)", "d=randint(1,4)", trials=5, seed=9, stop="asha:x:min")
    again = load_sweep_file(json.dumps(original.to_dict()), source="_sweep.json")
    assert again == original
    assert expand(again) == expand(original)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"space": {"a": [1,2]}', "sweep.json:1:"),
        ("[1, 2]", "holds a JSON object, not list"),
        ('{"space": {"a": [1]}, "trails": 3}', "unknown key(s) 'trails'"),
        ('{"trials": 3}', '"space" must be an object'),
        ('{"space": {}}', "empty sweep"),
        ('{"space": {"a": []}}', "sweep key 'a': no values"),
        ('{"space": {"a": {"b": 1}}}', "not an object"),
        ('{"space": {"a": "loguniform(0,1)"}}', "0 < low < high"),
        ('{"space": {"a": [1]}, "trials": 0}', "trial count must be from 1"),
        ('{"space": {"a": [1]}, "seed": "x"}', "seed must be an integer"),
        ('{"space": {"a": [1]}, "stop": 3}', '"stop" must be a string'),
        ('{"space": {"a": [1]}, "new_keys": 1}', '"new_keys" must be true or false'),
        ('{"space": {"a": [NaN]}}', "NaN is not a JSON value"),
    ],
)
def test_bad_sweep_files(text: str, problem: str) -> None:
    message = error(load_sweep_file, text, source="sweep.json")
    assert message.startswith("sweep.json")
    assert problem in message


def test_the_command_line_adds_to_the_file() -> None:
    loaded = load_sweep_file(json.dumps(EXAMPLE), source="sweep.json")
    merged = merge_cli(loaded, parse_assignments(["model_config.bs=16,32"]), trials=4, new_keys=True)
    assert list(merged.space) == ["model_config.lr", "model_config.opt", "model_config.bs"]
    assert (merged.trials, merged.seed, merged.stop, merged.new_keys) == (4, 0, "median:acc:max@2", True)
    alone = merge_cli(None, parse_assignments(["a=1,2"]), seed=5)
    assert alone == SweepSpec(space={"a": Choices((1, 2))}, seed=5)
    twice = error(merge_cli, loaded, parse_assignments(["model_config.opt=adam"]), source="sweep.json")
    assert "model_config.opt given both in sweep.json and on the command line" in twice
    assert "trial count" in error(merge_cli, loaded, {}, trials=0)


# --- configs ------------------------------------------------------------------------------------------

CONFIG = {"model_config": {"lr": 0.1, "opt": "adam"}, "epochs": 3}


def test_check_keys() -> None:
    check_keys(["model_config.lr", "epochs", "model_config"], CONFIG, new_keys=False)
    message = error(check_keys, ["model_config.lr", "model_config.lrr", "extra.x"], CONFIG, new_keys=False)
    assert "model_config.lrr, extra.x" in message
    assert "--new-keys" in message
    check_keys(["model_config.lrr", "extra.x"], CONFIG, new_keys=True)
    for new_keys in (False, True):
        message = error(check_keys, ["epochs.x"], CONFIG, new_keys=new_keys)
        assert "'epochs' holds 3 (int) in the config, not a dict" in message


def test_apply_sets_dotted_keys_on_a_copy() -> None:
    config = json.loads(json.dumps(CONFIG))
    assignment: dict[str, Any] = {"model_config.lr": 0.01, "extra.deep.x": [1], "epochs": 5}
    out = apply(config, assignment)
    assert out == {"model_config": {"lr": 0.01, "opt": "adam"}, "epochs": 5, "extra": {"deep": {"x": [1]}}}
    assert config == CONFIG
    out["extra"]["deep"]["x"].append(2)
    assert assignment["extra.deep.x"] == [1]
    assert "'epochs' holds 3 (int)" in error(apply, config, {"epochs.x": 1})


def test_varying_keys_and_labels() -> None:
    trials = expand(spec("model_config.lr=0.1,0.01", "model_config.opt=adam", "train.lr=1,1.0"))
    assert varying_keys(trials) == ["model_config.lr", "train.lr"]
    assert varying_keys([{"a": 1}, {"a": 1, "b": 2}]) == ["b"]
    assert trial_label(trials[0]) == "model_config.lr=0.1 opt=adam train.lr=1"
    assert trial_label({"lr": 0.0123456, "opt": "adam"}) == "lr=0.01235 opt=adam"
    assert trial_label({"a.lr": 1e-5, "flag": True}, ["flag"]) == "flag=true"
    assert trial_label({"name": "x" * 40}, width=10) == "name=xxxxxxxxx…"
