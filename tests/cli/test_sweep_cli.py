"""``sweep`` and ``compare S_0001`` in the CLI (issue 15), without a cluster: bad input is one line before
anything is asked or created; a good sweep sends its checked space (with the seed it drew) and prints its
trials; ``compare`` ranks a sweep's trials from the center's record or from the sweep's folder alone;
``tasks`` lists a sweep's trials under its id."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.cli import cluster
from dlnest_ray.cli import sweep as sweep_cli
from dlnest_ray.cli.app import main
from dlnest_ray.cli.tables import tasks_table
from dlnest_ray.savepack.metrics import MetricsLog
from dlnest_ray.sweeps.records import SweepInfo
from tests.projects import write_project


class FakeClient:
    """Records the sweep request; answers from an in-process center when one is given."""

    def __init__(self, center: Center | None = None) -> None:
        self.center = center
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def sweep(self, config_path: str, **kw: Any) -> str:
        self.calls.append((config_path, kw))
        assert self.center is not None
        kw = {k: v for k, v in kw.items() if k != "capture_env"}
        return self.center.sweep(config_path, **kw)

    def get_sweep(self, sweep_id: str) -> SweepInfo:
        assert self.center is not None
        return self.center.get_sweep(sweep_id)

    def get_sweeps(self) -> list[SweepInfo]:
        assert self.center is not None
        return self.center.get_sweeps()


def cli(argv: list[Any], client: FakeClient | None, monkeypatch: pytest.MonkeyPatch) -> int:
    def connect(address: Any, create: bool) -> FakeClient:
        assert client is not None, "bad input must be refused before connecting"
        return client

    monkeypatch.setattr(sweep_cli, "connect_client", connect)
    monkeypatch.setattr(cluster, "connect_client", connect)
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return int(info.value.code or 0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


@pytest.fixture
def center(tmp_path: Path) -> Center:
    return Center(home=tmp_path / "home", launcher=FakeLauncher(), devices=FakeDevices())


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("items", "says"),
    [
        (["model_config.lr=loguniform(0,1)", "--trials", "2"], "0 < low < high"),
        (["model_config.lr=range(5,1)"], "is empty"),
        ([], "empty sweep"),
        (["model_config.lr=1,2", "model_config.lr=3"], "given twice"),
        (
            ["model_config.lrr=1,2"],
            "not in the config: model_config.lrr; check the spelling, or pass --new-keys",
        ),
        (["model_config.lr=1,2", "--trials", "0"], "trial count must be from 1"),
        (["model_config.lr=uniform(0,1)"], "need a trial count: add --trials N"),
        (["model_config.lr=1,2", "--stop", "median:acc:best"], "mode must be max or min"),
        (["model_config.lr=1,2", "--trials", "3"], "the grid has only 2 points"),
        (["model_config.lr"], "has no '='"),
        (["model_config.lr=1,2", "--memory", "lots"], "--memory 'lots' is not a number"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    items: list[str],
    says: str,
) -> None:
    assert cli(["sweep", project, *items], None, monkeypatch) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and says in err[0], err
    assert not (project.parent / "Saves").exists()


def test_a_bad_sweep_file_is_one_line(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "sweep.json"
    bad.write_text('{"space": {"model_config.lr": [1, 2]}, "trails": 3}')
    assert cli(["sweep", project, "--file", bad], None, monkeypatch) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) 'trails'" in err[0] and str(bad) in err[0]


# ------------------------------------------------------------------------------------------ a sweep
def test_a_grid_is_sent_checked_and_its_trials_printed(
    project: Path, center: Center, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient(center)
    argv = ["sweep", project, "model_config.lr=0.1,0.01", "model_config.hidden=8,16,32", "-m", "4000"]
    assert cli([*argv, "--stop", "median:acc:max@2", "--priority", "2"], client, monkeypatch) == 0
    [(path, kw)] = client.calls
    assert path == str(project.resolve())
    assert kw["space"] == {"model_config.lr": [0.1, 0.01], "model_config.hidden": [8, 16, 32]}
    assert (kw["trials"], kw["seed"], kw["stop"], kw["memory_mb"], kw["priority"]) == (
        None,
        None,
        "median:acc:max@2",
        4000,
        2,
    )
    out = capsys.readouterr().out
    assert out.startswith("sweep: S_0001 (6 trials)\nfolder: ")
    assert "stop rule: median:acc:max@2" in out
    assert "T_0001" in out and "lr=0.1 hidden=8" in out and "lr=0.01 hidden=32" in out


def test_a_random_sweep_draws_with_a_seed_it_prints_and_json(
    project: Path, center: Center, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient(center)
    argv = ["sweep", project, "model_config.lr=loguniform(1e-4,1e-1)", "--trials", "3", "--cpu", "--json"]
    assert cli(argv, client, monkeypatch) == 0
    first = json.loads(capsys.readouterr().out)
    seed = client.calls[0][1]["seed"]
    assert isinstance(seed, int) and first["seed"] == seed and first["stop"] is None
    assert [t["task_id"] for t in first["trials"]] == ["T_0001", "T_0002", "T_0003"]
    assert all(Path(t["package"]).parent == Path(first["folder"]) for t in first["trials"])
    assert cli([*argv, "--seed", str(seed)], client, monkeypatch) == 0  # the same seed, the same trials
    again = json.loads(capsys.readouterr().out)
    assert [t["values"] for t in again["trials"]] == [t["values"] for t in first["trials"]]
    assert again["sweep_id"] == "S_0002"


def test_a_sweep_file_and_items_together(
    project: Path, tmp_path: Path, center: Center, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "sweep.json"
    file.write_text(json.dumps({"space": {"model_config.lr": "range(1,3)"}, "name": "lrs", "new_keys": True}))
    client = FakeClient(center)
    assert (
        cli(["sweep", project, "--file", file, "model_config.depth=2,3", "--cpu"], client, monkeypatch) == 0
    )
    kw = client.calls[0][1]
    assert kw["space"] == {"model_config.lr": "range(1,3)", "model_config.depth": [2, 3]}
    assert (kw["name"], kw["new_keys"]) == ("lrs", True)
    assert len(center.get_sweep("S_0001").record.trials) == 4


# ------------------------------------------------------------------------------------------ compare
ACCS = {0: [0.5, 0.7], 1: [0.6, 0.95], 2: [0.2, 0.1], 3: [0.65, 0.8]}  # trial index → acc per epoch


@pytest.fixture
def swept(project: Path, center: Center) -> Path:
    """A 4-trial sweep whose trials recorded ACCS (one is still unstarted: trial 4 of 5)."""
    sweep_id = center.sweep(
        str(project), space={"model_config.lr": "0.1,0.2,0.3,0.4,0.5"}, placement="cpu", stop="median:acc:max"
    )
    rec = center.get_sweep(sweep_id).record
    for i, accs in ACCS.items():
        log = MetricsLog(Path(rec.trials[i].package))
        for epoch, acc in enumerate(accs):
            log.append(
                epoch=epoch, step=epoch, wall_time=time.time(), log={"acc": acc, "loss": 1 - acc}, marks={}
            )
    return Path(rec.folder)


def test_compare_a_sweep_ranks_its_trials_by_the_stop_rules_metric(
    swept: Path, center: Center, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["compare", "S_0001", "--json"], FakeClient(center), monkeypatch) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["metric"], out["goal"], out["varying_keys"]) == ("acc", "max", ["model_config.lr"])
    ranked = [(t["rank"], t["task_id"], t["best"], t["best_epoch"]) for t in out["trials"]]
    assert ranked == [
        (1, "T_0002", 0.95, 1),
        (2, "T_0004", 0.8, 1),
        (3, "T_0001", 0.7, 1),
        (4, "T_0003", 0.2, 0),
        (None, "T_0005", None, None),  # not started: last, unranked
    ]
    assert out["trials"][0]["values"] == {"model_config.lr": 0.2} and out["trials"][0]["status"] == "RUNNING"
    assert cli(["compare", "S_0001", "--metric", "loss", "--top", "2"], FakeClient(center), monkeypatch) == 0
    table = capsys.readouterr().out
    assert "S_0001: 5 trials ranked by best loss (min) (the best 2 of 5)" in table
    lines = [line for line in table.splitlines() if "T_000" in line]
    assert [line.split()[3] for line in lines] == ["T_0002", "T_0004"]  # "│ 1 │ T_0002 ..."
    assert "lr" in table and "hidden" not in table  # only the keys that vary


def test_compare_a_sweep_folder_needs_no_cluster_and_plots(
    swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    assert cli(["compare", swept, "--plot", plot, "--json"], None, monkeypatch) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["task_id"] for t in out["trials"]][:2] == ["T_0002", "T_0004"]
    assert out["trials"][0]["status"] == "not started"  # from the package alone: no segment yet
    assert out["plot"] == str(plot) and plot.stat().st_size > 1000


def test_compare_a_sweep_with_an_unknown_metric_is_one_line(
    swept: Path, center: Center, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["compare", "S_0001", "--metric", "f1"], FakeClient(center), monkeypatch) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial recorded the metric 'f1'" in err[0]
    assert cli(["compare", "S_0001", "--top", "0"], FakeClient(center), monkeypatch) == 1
    assert "--top must be 1 or more" in capsys.readouterr().err


def test_tasks_lists_a_sweeps_trials_under_its_id(swept: Path, center: Center) -> None:
    rows = [t.to_row() for t in center.get_task_info(include_finished=True)]
    out = Console(width=250)
    with out.capture() as cap:
        out.print(tasks_table(rows, title="t"))
    lines = cap.get().splitlines()
    at = next(i for i, line in enumerate(lines) if "S_0001" in line)
    assert "5 running" in lines[at] and "sweep (its trials below)" in lines[at]
    trial_lines = [line for line in lines[at + 1 :] if "T_000" in line]
    assert len(trial_lines) == 5 and "lr=0.1" in trial_lines[0] and "lr=0.5" in trial_lines[4]


# ------------------------------------------------------------------------------------------ sweeps
def test_sweeps_lists_every_sweep_with_its_trials_by_status(
    swept: Path,
    project: Path,
    center: Center,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(["sweeps"], FakeClient(center), monkeypatch) == 0
    out = capsys.readouterr().out
    assert "S_0001" in out and "S_0002" not in out
    second = center.sweep(str(project), space={"model_config.lr": "0.1,0.2"}, placement="cpu", name="lrs")
    for trial in center.get_sweep(second).record.trials:  # both end: one succeeded, one failed
        center.task_finished(trial.task_id, "SUCCEEDED" if trial.task_id.endswith("6") else "FAILED", "boom")
    assert cli(["sweeps", "--json"], FakeClient(center), monkeypatch) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["sweep_id"], r["name"], r["trials"], r["stop"], r["done"]) for r in rows] == [
        ("S_0001", "", 5, "median:acc:max@1", False),  # the rule as the center normalised it
        ("S_0002", "lrs", 2, None, True),
    ]
    assert rows[0]["counts"] == {"RUNNING": 5} and rows[1]["counts"] == {"SUCCEEDED": 1, "FAILED": 1}
    assert rows[0]["folder"] == str(swept) and rows[0]["created_at"] <= rows[1]["created_at"]
    monkeypatch.setenv("COLUMNS", "250")
    assert cli(["sweeps"], FakeClient(center), monkeypatch) == 0
    table = capsys.readouterr().out
    first = next(line for line in table.splitlines() if "S_0001" in line)
    last = next(line for line in table.splitlines() if "S_0002" in line)
    assert "5 running" in first and "median:acc:max@1" in first
    assert "lrs" in last and "1 succeeded, 1 failed" in last


def test_sweeps_without_any_says_how_to_queue_one(
    center: Center, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["sweeps"], FakeClient(center), monkeypatch) == 0
    assert capsys.readouterr().out.strip() == "no sweeps (`dlnest-ray sweep CONFIG KEY=SPEC...` queues one)"
    assert cli(["sweeps", "--json"], FakeClient(center), monkeypatch) == 0
    assert json.loads(capsys.readouterr().out) == []
