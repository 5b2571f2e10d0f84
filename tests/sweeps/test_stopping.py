"""Early-stopping rules: parsing, median stopping and asynchronous successive halving over trial curves
(``values[0]`` is epoch 1). Pure: curves in, decisions out."""

from __future__ import annotations

import pytest

from dlnest_ray.sweeps.stopping import (
    FORMS,
    AshaRule,
    MedianRule,
    StopDecision,
    SweepError,
    TrialCurve,
    decide_stops,
    goal,
    parse_rule,
)


def curve(trial_id: str, *values: float | None, active: bool = True) -> TrialCurve:
    return TrialCurve(trial_id, tuple(values), active)


def stopped(rule: str, *curves: TrialCurve) -> dict[str, str]:
    decisions = decide_stops(parse_rule(rule), curves)
    assert decisions == decide_stops(parse_rule(rule), curves)  # same curves, same answer
    return {d.trial_id: d.reason for d in decisions}


# --- parse_rule ---------------------------------------------------------------------------------------


def test_parse_rules() -> None:
    assert parse_rule("median:acc:max@2") == MedianRule("acc", "max", 2)
    assert parse_rule("median:val/loss:min") == MedianRule("val/loss", "min", 1)
    assert parse_rule("asha:acc:max") == AshaRule("acc", "max", 1, 3, None)
    assert parse_rule(" asha:loss:min:eta=2:min=2:max=16 ") == AshaRule("loss", "min", 2, 2, 16)
    for text in ("median:acc:max@2", "asha:acc:max:min=1:eta=3", "asha:loss:min:min=2:eta=4:max=32"):
        assert parse_rule(text).describe() == text
        assert parse_rule(parse_rule(text).describe()) == parse_rule(text)
    assert goal(parse_rule("median:acc:max@2")) == ("acc", "max")
    assert goal(parse_rule("asha:loss:min")) == ("loss", "min")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "unknown rule ''"),
        ("hyperband:acc:max", "unknown rule 'hyperband'"),
        ("median", "median takes METRIC:max|min"),
        ("median:acc", "median takes METRIC:max|min"),
        ("median:acc:max:2", "median takes METRIC:max|min"),
        ("median:acc:best", "mode must be max or min, got 'best'"),
        ("median::max", "metric name '' is empty"),
        ("median:acc:max@0", "start epoch must be 1 or more"),
        ("median:acc:max@two", "the start epoch must be an integer"),
        ("median:acc:max@", "give the start epoch after '@'"),
        ("asha:acc", "asha takes METRIC:max|min"),
        ("asha:acc:up", "mode must be max or min"),
        ("asha:acc:max:eta=1", "eta must be 2 or more"),
        ("asha:acc:max:min=0", "min must be 1 or more"),
        ("asha:acc:max:min=4:max=2", "max (2) must not be below min (4)"),
        ("asha:acc:max:rungs=3", "unknown option 'rungs=3'"),
        ("asha:acc:max:eta", "unknown option 'eta'"),
        ("asha:acc:max:eta=3:eta=4", "option eta is given twice"),
        ("asha:acc:max:eta=x", "eta must be an integer"),
    ],
)
def test_bad_rules_name_the_rule_and_the_forms(text: str, problem: str) -> None:
    with pytest.raises(SweepError) as info:
        parse_rule(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"stop rule {text!r}: ")
    assert problem in message
    assert message.endswith(f"; expected {FORMS}")
    assert FORMS == "median:METRIC:max|min[@START] or asha:METRIC:max|min[:min=R][:eta=E][:max=T]"


# --- median stopping ----------------------------------------------------------------------------------


def test_median_stops_the_hopeless_trial_only() -> None:
    curves = (
        curve("T1", 0.50, 0.80),
        curve("T2", 0.60, 0.87),
        curve("T3", 0.55, 0.90),
        curve("T4", 0.10, 0.11),
    )
    assert stopped("median:acc:max@2", *curves) == {
        "T4": "median stopping at epoch 2: best acc 0.11 < median 0.725 of 3 other trials"
    }


def test_median_compares_best_so_far() -> None:
    # T4 dipped at epoch 2 but its best (0.9 at epoch 1) beats the others' median
    curves = (curve("T1", 0.5, 0.6), curve("T2", 0.5, 0.7), curve("T3", 0.5, 0.8), curve("T4", 0.9, 0.1))
    assert stopped("median:acc:max@2", *curves) == {}


def test_median_waits_until_start() -> None:
    curves = (curve("T1", 0.8), curve("T2", 0.8), curve("T3", 0.8), curve("T4", 0.1))
    assert stopped("median:acc:max@2", *curves) == {}
    assert list(stopped("median:acc:max", *curves)) == ["T4"]  # start 1 by default
    later = (curve("T1", 0.8, 0.9), curve("T2", 0.8, 0.85), curve("T3", 0.8, 0.87), curve("T4", 0.1, 0.1))
    assert list(stopped("median:acc:max@2", *later)) == ["T4"]


def test_median_compares_with_the_others_running_means() -> None:
    # T3's best 0.7 beats the median of the others' means (0.55, 0.6, 0.45), not that of their bests (0.8)
    curves = (curve("T1", 0.3, 0.8), curve("T2", 0.3, 0.9), curve("T3", 0.7, 0.6), curve("T4", 0.4, 0.5))
    decisions = stopped("median:acc:max@2", *curves)
    assert decisions == {"T4": "median stopping at epoch 2: best acc 0.5 < median 0.6 of 3 other trials"}


def test_median_needs_two_other_trials_at_the_same_epoch() -> None:
    assert stopped("median:acc:max", curve("T1", 0.9), curve("T2", 0.1)) == {}
    # T3 and T4 have not finished epoch 2 yet: only T1 is evidence for T2 at epoch 2
    curves = (curve("T1", 0.9, 0.9), curve("T2", 0.1, 0.1), curve("T3", 0.95), curve("T4", 0.99))
    assert stopped("median:acc:max@2", *curves) == {}
    rule = MedianRule("acc", "max", min_others=1)
    assert [d.trial_id for d in decide_stops(rule, (curve("T1", 0.9), curve("T2", 0.1)))] == ["T2"]


def test_median_judges_active_trials_with_finished_ones_as_evidence() -> None:
    curves = (
        curve("T1", 0.9, 0.9, active=False),
        curve("T2", 0.8, 0.8, active=False),
        curve("T3", 0.1, 0.1, active=False),
        curve("T4", 0.2, 0.2),
        curve("T5"),  # pending: nothing to judge
    )
    assert stopped("median:acc:max", *curves) == {
        "T4": "median stopping at epoch 2: best acc 0.2 < median 0.8 of 3 other trials"
    }


def test_median_minimizes_and_skips_missing_values() -> None:
    curves = (
        curve("T1", 1.0, None, 0.5),
        curve("T2", None, 0.6, 0.4),
        curve("T3", 2.0, 1.0, float("nan")),
        curve("T4", 3.0, None, 2.5),
        curve("T5", None, None, None),
    )
    assert stopped("median:loss:min@3", *curves) == {
        # others' means: T1 0.75, T2 0.5, T4 2.75 (T3's NaN and T5's Nones are no values)
        "T3": "median stopping at epoch 3: best loss 1 > median 0.75 of 3 other trials",
        "T4": "median stopping at epoch 3: best loss 2.5 > median 0.75 of 3 other trials",
    }


def test_ties_with_the_median_continue() -> None:
    curves = (curve("T1", 0.5), curve("T2", 0.5), curve("T3", 0.5))
    assert stopped("median:acc:max", *curves) == {}


# --- ASHA ---------------------------------------------------------------------------------------------


def test_rungs() -> None:
    rule = AshaRule("acc", "max", min_t=1, eta=3)
    assert rule.rungs(30) == [1, 3, 9, 27]
    assert [t for t in range(1, 30) if rule.is_rung(t)] == [1, 3, 9, 27]
    bounded = AshaRule("acc", "max", min_t=2, eta=2, max_t=8)
    assert bounded.rungs(100) == [2, 4, 8]
    assert [t for t in range(1, 20) if bounded.is_rung(t)] == [2, 4, 8]


def test_asha_keeps_the_top_third_at_a_rung() -> None:
    scores = {"T1": 0.9, "T2": 0.8, "T3": 0.42, "T4": 0.3, "T5": 0.2, "T6": 0.1}
    decisions = stopped("asha:acc:max", *(curve(t, 0.0, 0.0, s) for t, s in scores.items()))
    assert sorted(decisions) == ["T3", "T4", "T5", "T6"]
    assert decisions["T3"] == "asha rung 3: acc 0.42 not in the top 1/3 of 6 trials (cutoff 0.8)"


def test_asha_lets_early_arrivals_through() -> None:
    # only two trials reached rung 3 (eta=3): both continue
    curves = (curve("T1", 0.9, 0.9, 0.9), curve("T2", 0.1, 0.1, 0.1), curve("T3", 0.5, 0.5))
    assert stopped("asha:acc:max", *curves) == {}


def test_asha_judges_only_at_rung_epochs() -> None:
    at_rung = [curve(f"T{i}", float(i), float(i), float(i)) for i in range(1, 7)]
    assert len(stopped("asha:acc:max", *at_rung)) == 4
    between = [curve(f"T{i}", float(i), float(i), float(i), float(i)) for i in range(1, 7)]
    assert stopped("asha:acc:max", *between) == {}  # epoch 4 is no rung


def test_asha_counts_finished_trials_and_minimizes() -> None:
    curves = (
        curve("T1", 0.1, active=False),
        curve("T2", 0.2, 0.2, active=False),
        curve("T3", 0.3, active=False),
        curve("T4", 0.9),
        curve("T5", 0.15),
    )
    decisions = decide_stops(parse_rule("asha:loss:min:eta=2"), curves)
    assert decisions == [
        StopDecision("T4", "asha rung 1: loss 0.9 not in the top 1/2 of 5 trials (cutoff 0.15)"),
    ]


def test_asha_reads_the_latest_value_up_to_the_rung() -> None:
    curves = [curve(f"T{i}", float(i)) for i in range(1, 4)] + [curve("T4", 0.5, None, None)]
    curves += [curve(f"U{i}", 5.0, 5.0, 5.0) for i in range(1, 3)]
    decisions = stopped("asha:acc:max", *curves)
    assert decisions["T4"] == "asha rung 3: acc 0.5 not in the top 1/3 of 3 trials (cutoff 5)"


def test_duplicate_trial_ids_are_a_bug() -> None:
    with pytest.raises(ValueError, match="distinct"):
        decide_stops(parse_rule("median:acc:max"), (curve("T1", 1.0), curve("T1", 2.0)))
