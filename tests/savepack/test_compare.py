"""savepack.compare: config diffs and run summaries — pure rules on plain values, then on real packages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dlnest_ray import PackageError, SavePackage
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.compare import (
    MetricsData,
    RunData,
    common_metrics,
    differing_keys,
    display_names,
    flatten_config,
    load_run,
    metric_goal,
    summarize_metric,
    summarize_run,
)
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import isolated_imports, write_freq, write_project


# ------------------------------------------------------------------------------------------- config
def test_flatten_config_nests_with_dots_and_keeps_leaves() -> None:
    cfg = {"a": {"b": {"c": 1}, "d": [1, {"x": 2}]}, "e": {}, "f": None}
    assert flatten_config(cfg) == {"a.b.c": 1, "a.d": [1, {"x": 2}], "e": {}, "f": None}


def test_differing_keys() -> None:
    base = {
        "root_file_path": "/saves/a",
        "model_config": {"lr": 0.01, "hidden": 16},
        "epochs": 3,
        "flag": True,
        "lst": [1, 2],
    }
    other = {
        "root_file_path": "/saves/b",  # always differs between packages: never reported
        "model_config": {"lr": 0.05, "hidden": 16.0},  # 16 == 16.0 in JSON
        "epochs": 3,
        "flag": 1,  # a bool is not the number 1
        "lst": [1, 3],
        "extra": {"only": "here"},  # missing in the first config
    }
    assert differing_keys([base, other]) == ["extra.only", "flag", "lst", "model_config.lr"]
    assert differing_keys([base, dict(base)]) == []
    assert differing_keys([base]) == []
    assert "root_file_path" in differing_keys([base, other], ignore=())


# ------------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    ("name", "goal"),
    [
        ("acc", "max"),
        ("val_accuracy", "max"),
        ("top1Acc", "max"),
        ("F1", "max"),
        ("mAP", "max"),
        ("mean_iou", "max"),
        ("auc_roc", "max"),
        ("bleu_score", "max"),
        ("precision", "max"),
        ("recall", "max"),
        ("loss", "min"),
        ("val_loss", "min"),
        ("map_loss", "min"),  # a loss, whatever else its name says
        ("acc_error", "min"),
        ("lr", "min"),
        ("wer", "min"),
    ],
)
def test_metric_goal(name: str, goal: str) -> None:
    assert metric_goal(name) == goal


def test_summarize_metric_final_and_best() -> None:
    s = summarize_metric("val_acc", [(0, 0.5), (1, 0.9), (2, 0.9), (3, 0.7), (4, None)])
    assert (s.goal, s.final, s.best, s.best_epoch) == ("max", 0.7, 0.9, 1)  # first epoch of a tie
    s = summarize_metric("loss", [(0, 2.0), (1, 1.0), (2, 1.5)])
    assert (s.goal, s.final, s.best, s.best_epoch) == ("min", 1.5, 1.0, 1)
    s = summarize_metric("loss", [(0, 2.0), (1, float("nan"))])
    assert s.final is not None and math.isnan(s.final)  # a diverged run shows it
    assert (s.best, s.best_epoch) == (2.0, 0)
    s = summarize_metric("loss", [(0, None)])
    assert (s.final, s.best, s.best_epoch) == (None, None, None)


def _run(segments: list[dict], rows: list[dict] | None, args: dict | None = None) -> RunData:
    metrics = None
    if rows is not None:
        columns = list(dict.fromkeys(k for r in rows for k in r)) or ["epoch"]
        metrics = MetricsData(columns=columns, rows=rows)
    return RunData(path=Path("/p/run"), args=args or {}, meta={"segments": segments}, metrics=metrics)


def test_summarize_run_from_segments_and_rows() -> None:
    segments = [
        {"started": 100.0, "ended": 160.0, "status": "failed", "devices": ["cuda:0: A"], "world_size": 1},
        {
            "started": 200.0,
            "ended": 230.5,
            "status": "interrupted",
            "devices": ["cuda:1: A"],
            "world_size": 2,
        },
        {"started": 300.0, "ended": 310.0, "status": "succeeded", "devices": ["cuda:0: A"], "world_size": 1},
    ]
    rows = [
        {"epoch": 0, "step": 10, "wall_time": 1.0, "loss": 1.0},
        {"epoch": 1, "step": 20, "wall_time": 2.0, "loss": 0.5, "acc": 0.8},
    ]
    s = summarize_run(_run(segments, rows, {"root_file_path": "/p/run", "m": {"lr": 0.1}}))
    assert s.wall_time_s == pytest.approx(60.0 + 30.5 + 10.0)
    assert s.devices == ["cuda:0: A", "cuda:1: A"]
    assert s.world_size == 2
    assert s.status == "succeeded"
    assert s.epochs == 2
    assert list(s.metrics) == ["loss", "acc"]  # epoch, step and wall_time are bookkeeping
    assert s.metrics["acc"].final == 0.8 and s.metrics["acc"].best_epoch == 1
    assert s.config == {"m.lr": 0.1}  # root_file_path is never compared


def test_summarize_run_unfinished_and_not_started() -> None:
    running = summarize_run(_run([{"started": 1.0, "devices": ["cpu"]}], None))
    assert (running.status, running.wall_time_s, running.epochs, running.metrics) == (
        "unfinished",
        None,
        0,
        {},
    )
    fresh = summarize_run(_run([], None))
    assert (fresh.status, fresh.devices, fresh.world_size) == ("not started", [], None)
    failed_early = summarize_run(
        _run([{"started": 1.0, "ended": 2.0, "status": "failed", "finished_epoch": 1}], None)
    )
    assert (failed_early.status, failed_early.epochs) == ("failed", 2)


def test_common_metrics_and_display_names() -> None:
    a = summarize_run(_run([], [{"epoch": 0, "loss": 1.0, "acc": 0.5, "lr": 0.1}]))
    b = summarize_run(_run([], [{"epoch": 0, "acc": 0.6, "loss": 2.0, "lr": None}]))
    assert common_metrics([a, b]) == ["loss", "acc"]  # lr: never recorded by b
    paths = [Path("/x/Saves/run"), Path("/y/Saves/run"), Path("/y/Saves/other")]
    assert display_names(paths) == ["x/Saves/run", "y/Saves/run", "other"]


# ------------------------------------------------------------------------------------------- real packages
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two 2-epoch runs of one project that differ only in the learning rate, and a package never trained."""
    root = tmp_path_factory.mktemp("compare")
    cfg = write_project(root / "proj", epochs=2)
    packages = []
    for lr in (0.01, 0.05):
        pkg = SavePackage(cfg, write_freq(root / f"lr{lr}.json", model_config={"lr": lr})).save_to_new_dir()
        with isolated_imports():
            train(pkg, TrainOptions(cpu=True))
        packages.append(pkg)
    untrained = SavePackage(cfg).save_to_new_dir()
    return packages[0], packages[1], untrained


def test_real_packages_differ_only_in_lr(trained: tuple[Path, Path, Path]) -> None:
    a, b, _ = trained
    runs = [load_run(a), load_run(b)]
    assert runs[0].args["root_file_path"] != runs[1].args["root_file_path"]
    summaries = [summarize_run(r) for r in runs]
    assert differing_keys([s.config for s in summaries]) == ["model_config.lr"]
    assert [s.config["model_config.lr"] for s in summaries] == [0.01, 0.05]


def test_real_package_summary_matches_metrics_and_manifest(trained: tuple[Path, Path, Path]) -> None:
    pkg = trained[1]
    s = summarize_run(load_run(pkg))
    rows = read_metrics(pkg).to_pylist()
    segments = json.loads((pkg / "_package.json").read_text())["segments"]
    assert s.epochs == len(rows) == 2
    assert s.status == segments[-1]["status"] == "succeeded"
    assert s.devices == ["cpu"] and s.world_size == 1
    assert s.wall_time_s == pytest.approx(sum(seg["ended"] - seg["started"] for seg in segments))
    assert set(s.metrics) == {"loss", "acc", "val_loss", "lr"}
    for name, m in s.metrics.items():
        values = [r[name] for r in rows]
        assert m.final == values[-1]
        assert m.best == (max(values) if name == "acc" else min(values))
        assert rows[m.best_epoch][name] == m.best


def test_package_without_metrics(trained: tuple[Path, Path, Path]) -> None:
    run = load_run(trained[2])
    assert run.metrics is None
    s = summarize_run(run)
    assert (s.status, s.epochs, s.metrics, s.wall_time_s) == ("not started", 0, {}, None)


def test_not_a_package(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="is not a save package"):
        load_run(tmp_path)
