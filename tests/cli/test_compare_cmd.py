"""``compare PACKAGE PACKAGE...``: config differences, final/best metrics, --json and --plot on real runs.

The command is mounted on a small Typer app here (registering it in cli/app.py is separate), and runs
in-process through Typer's CliRunner; a DlnestError reaches the test as the result's exception.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dlnest_ray import DlnestError, SavePackage
from dlnest_ray.cli.compare import compare
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import isolated_imports, write_freq, write_project

LRS = (0.01, 0.05)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the first chunk, right after the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND", "the PNG does not end with its IEND chunk"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(compare)
    return app


def invoke(app: typer.Typer, *args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 2-epoch runs of one project that differ only in model_config.lr, and one never trained."""
    root = tmp_path_factory.mktemp("compare_cmd")
    cfg = write_project(root / "proj", epochs=2)
    out: dict[str, Path] = {}
    for lr in LRS:
        freq = write_freq(root / f"lr{lr}.json", model_config={"lr": lr})
        pkg = SavePackage(cfg, freq).save_to_new_dir(f"lr{lr}")
        with isolated_imports():
            train(pkg, TrainOptions(cpu=True))
        out[f"lr{lr}"] = pkg
    out["untrained"] = SavePackage(cfg).save_to_new_dir("untrained")
    return out


def cells(stdout: str, label: str) -> list[str]:
    """The cells after the label of the table row called ``label``."""
    for line in stdout.splitlines():
        parts = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│") and parts[0] == label:
            return parts[1:]
    raise AssertionError(f"no row {label!r} in:\n{stdout}")


def test_table(cli, runs) -> None:
    a, b = runs["lr0.01"], runs["lr0.05"]
    result = invoke(cli, a, b)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")] == ["", "lr0.01", "lr0.05"]
    assert [float(c) for c in cells(result.stdout, "cfg model_config.lr")] == list(LRS)
    labels = [
        line.strip("│").split("│")[0].strip() for line in result.stdout.splitlines() if line.startswith("│")
    ]
    metric_rows = ["loss final", "loss best (min)", "acc final", "acc best (max)"]
    metric_rows += ["val_loss final", "val_loss best (min)", "lr final", "lr best (min)"]
    # the one config row: identical keys (hidden, seed, epochs...) and root_file_path are not shown
    assert labels == ["status", "epochs", "wall time", "devices", "cfg model_config.lr", *metric_rows]
    assert cells(result.stdout, "status") == ["succeeded", "succeeded"]
    assert cells(result.stdout, "epochs") == ["2", "2"]
    assert cells(result.stdout, "devices") == ["cpu", "cpu"]
    for i, pkg in enumerate((a, b)):
        rows = read_metrics(pkg).to_pylist()
        for name in ("loss", "acc", "val_loss", "lr"):
            values = [r[name] for r in rows]
            best = max(values) if name == "acc" else min(values)
            goal = "max" if name == "acc" else "min"
            assert float(cells(result.stdout, f"{name} final")[i]) == pytest.approx(values[-1], rel=1e-5)
            best_text, at = cells(result.stdout, f"{name} best ({goal})")[i].split(" @")
            assert float(best_text) == pytest.approx(best, rel=1e-5)
            assert values[int(at)] == best


def test_runs_are_labelled_by_their_description(cli, tmp_path) -> None:
    """Timestamp folders say nothing: a run's description labels it; one two runs share gets the
    folder; a run without one keeps its folder name. Config rows are `cfg KEY`, never `epochs` twice."""
    cfg = write_project(tmp_path / "proj", epochs=1)
    freq = write_freq(tmp_path / "two.json", epochs=2)
    a = SavePackage(cfg).save_to_new_dir(description="baseline")
    b = SavePackage(cfg, freq).save_to_new_dir(description="longer")
    c = SavePackage(cfg).save_to_new_dir(description="longer")
    d = SavePackage(cfg).save_to_new_dir()
    result = invoke(cli, a, b, c, d)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("┃"))
    assert [h.strip() for h in header.strip("┃").split("┃")] == [
        "",
        "baseline",
        f"longer ({b.name})",
        f"longer ({c.name})",
        d.name,
    ]
    assert cells(result.stdout, "cfg epochs") == ["1", "2", "1", "1"]
    assert cells(result.stdout, "epochs") == ["0", "0", "0", "0"]  # finished epochs: none trained
    names = [r["name"] for r in json.loads(invoke(cli, a, d, "--json").stdout)["runs"]]
    assert names == ["baseline", d.name]


def test_json(cli, runs) -> None:
    a, b = runs["lr0.01"], runs["lr0.05"]
    result = invoke(cli, a, b, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["packages"] == [str(a), str(b)]
    assert out["differing_keys"] == ["model_config.lr"]
    assert out["common_metrics"] == ["loss", "acc", "val_loss", "lr"]
    assert [r["name"] for r in out["runs"]] == ["lr0.01", "lr0.05"]
    for run, pkg, lr in zip(out["runs"], (a, b), LRS, strict=True):
        segments = json.loads((pkg / "_package.json").read_text())["segments"]
        rows = read_metrics(pkg).to_pylist()
        assert run["package"] == str(pkg)
        assert run["config"] == {"model_config.lr": lr}
        assert (run["status"], run["epochs"], run["devices"]) == ("succeeded", 2, ["cpu"])
        assert (run["world_size"], run["peak_gpu_mb"]) == (1, None)  # a CPU run records no GPU peak
        assert run["wall_time_s"] == pytest.approx(sum(s["ended"] - s["started"] for s in segments))
        loss = [r["loss"] for r in rows]
        assert run["metrics"]["loss"] == {
            "goal": "min",
            "final": loss[-1],
            "best": min(loss),
            "best_epoch": loss.index(min(loss)),
        }
        acc = [r["acc"] for r in rows]
        assert run["metrics"]["acc"]["best"] == max(acc) and run["metrics"]["acc"]["goal"] == "max"


def test_untrained_package_is_compared_too(cli, runs) -> None:
    result = invoke(cli, runs["lr0.05"], runs["untrained"], "--json")  # untrained: the project's lr 0.01
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["differing_keys"] == ["model_config.lr"]
    assert out["common_metrics"] == []
    untrained = out["runs"][1]
    assert (untrained["status"], untrained["epochs"], untrained["metrics"]) == ("not started", 0, {})
    table = invoke(cli, runs["lr0.05"], runs["untrained"])
    assert cells(table.stdout, "loss final")[1] == "(absent)"
    assert cells(table.stdout, "status")[1] == "not started"


def test_plot_overlays_every_run(cli, runs, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    a, b = runs["lr0.01"], runs["lr0.05"]
    target = tmp_path / "loss.png"
    result = invoke(cli, a, b, "--plot", target)
    assert result.exit_code == 0, result.output
    assert png_size(target) == (800, 500)
    assert f"plot: {target}" in result.stdout
    result = invoke(cli, a, b, "--plot", tmp_path / "acc.png", "--metric", "acc", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "acc.png")
    assert png_size(tmp_path / "acc.png") == (800, 500)


def test_plot_errors(cli, runs, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    a, b = runs["lr0.01"], runs["lr0.05"]
    result = invoke(cli, a, b, "--plot", tmp_path / "x.png", "--metric", "bleu")
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == (
        "--metric 'bleu' is not a metric of every run; lr0.01, lr0.05 did not record it; "
        "common metrics: loss, acc, val_loss, lr"
    )
    result = invoke(cli, a, runs["untrained"], "--plot", tmp_path / "x.png")
    assert isinstance(result.exception, DlnestError)
    assert "no metric in common" in str(result.exception)
    result = invoke(cli, a, b, "--metric", "acc")
    assert isinstance(result.exception, DlnestError)
    assert "add --plot" in str(result.exception)
    assert not (tmp_path / "x.png").exists()


def test_plot_without_matplotlib(cli, runs, tmp_path, monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` finds: ImportError
    result = invoke(cli, runs["lr0.01"], runs["lr0.05"], "--plot", tmp_path / "x.png")
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == "--plot needs matplotlib: pip install 'dlnest-ray[plot]'"
    assert result.stdout == ""
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_packages(cli, runs, count) -> None:
    result = invoke(cli, *[runs["lr0.01"]][:count])
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == f"compare needs at least 2 save packages (got {count})"


def test_same_package_twice_and_not_a_package(cli, runs, tmp_path) -> None:
    a = runs["lr0.01"]
    result = invoke(cli, a, a.parent / ".." / "Saves" / a.name)
    assert isinstance(result.exception, DlnestError)
    assert "the same package is given twice" in str(result.exception)
    result = invoke(cli, a, tmp_path)
    assert isinstance(result.exception, DlnestError)
    assert "is not a save package" in str(result.exception)
