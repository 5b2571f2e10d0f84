"""``metrics PACKAGE``: the per-epoch table, --keys, --json and --plot on a real trained package.

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

from dlnest_ray import DlnestError, PackageError, SavePackage
from dlnest_ray.cli.metrics import metrics
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import isolated_imports, write_project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the first chunk, right after the signature)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:-4] == b"\x00\x00\x00\x00IEND", "the PNG does not end with its IEND chunk"
    return width, height


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(metrics)
    return app


def invoke(app: typer.Typer, *args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A project trained for 3 epochs, and a package of it that never trained (no metrics.parquet)."""
    cfg = write_project(tmp_path_factory.mktemp("metrics") / "proj", epochs=3)
    trained = SavePackage(cfg).save_to_new_dir()
    with isolated_imports():
        train(trained, TrainOptions(cpu=True))
    return trained, SavePackage(cfg).save_to_new_dir()


def table_rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the one rich table in ``stdout``."""
    header = next(line for line in stdout.splitlines() if line.startswith("┃"))
    body = [line for line in stdout.splitlines() if line.startswith("│")]

    def cells(line: str, sep: str) -> list[str]:
        return [c.strip() for c in line.strip(sep).split(sep)]

    return cells(header, "┃"), [cells(line, "│") for line in body]


def test_table_shows_every_metric_of_every_epoch(cli, packages) -> None:
    pkg = packages[0]
    result = invoke(cli, pkg)
    assert result.exit_code == 0, result.output
    header, rows = table_rows(result.stdout)
    assert header == ["epoch", "loss", "acc", "val_loss", "lr"]  # step and wall_time only on request
    expected = read_metrics(pkg).to_pylist()
    assert len(rows) == len(expected) == 3
    for cells, want in zip(rows, expected, strict=True):
        assert int(cells[0]) == want["epoch"]
        for key, text in zip(header[1:], cells[1:], strict=True):
            assert float(text) == pytest.approx(want[key], rel=1e-5), key


def test_keys_choose_columns(cli, packages) -> None:
    pkg = packages[0]
    result = invoke(cli, pkg, "--keys", "acc, step,acc")
    assert result.exit_code == 0, result.output
    header, rows = table_rows(result.stdout)
    assert header == ["epoch", "acc", "step"]
    assert [int(r[2]) for r in rows] == [r["step"] for r in read_metrics(pkg).to_pylist()]


def test_json(cli, packages) -> None:
    pkg = packages[0]
    result = invoke(cli, pkg, "--json", "--keys", "loss,acc")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == {
        "package": str(pkg),
        "keys": ["loss", "acc"],
        "rows": [
            {"epoch": r["epoch"], "loss": r["loss"], "acc": r["acc"]} for r in read_metrics(pkg).to_pylist()
        ],
    }


def test_plot_writes_a_png_of_the_fixed_size(cli, packages, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "curves.png"
    result = invoke(cli, packages[0], "--plot", target, "--keys", "loss,acc")
    assert result.exit_code == 0, result.output
    assert png_size(target) == (800, 500)
    assert f"plot: {target}" in result.stdout
    result = invoke(cli, packages[0], "--plot", tmp_path / "all.png", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plot"] == str(tmp_path / "all.png")
    assert png_size(tmp_path / "all.png") == (800, 500)


def test_plot_without_matplotlib(cli, packages, tmp_path, monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` finds: ImportError
    result = invoke(cli, packages[0], "--plot", tmp_path / "x.png")
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == "--plot needs matplotlib: pip install 'dlnest-ray[plot]'"
    assert result.stdout == ""  # refused before printing anything
    assert not (tmp_path / "x.png").exists()


def test_package_without_metrics(cli, packages) -> None:
    result = invoke(cli, packages[1])
    assert isinstance(result.exception, DlnestError)
    assert "has no metrics.parquet" in str(result.exception)


def test_unknown_key_names_the_available_ones(cli, packages) -> None:
    result = invoke(cli, packages[0], "--keys", "loss,accuracy")
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == (
        f"unknown metric key 'accuracy' in {packages[0].name}; "
        "available: step, wall_time, loss, loss.last, acc, val_loss, lr"
    )
    result = invoke(cli, packages[0], "--keys", " , ")
    assert isinstance(result.exception, DlnestError)
    assert str(result.exception) == (
        f"--keys needs metric names separated by commas; available in {packages[0].name}: "
        "step, wall_time, loss, loss.last, acc, val_loss, lr"
    )


def test_not_a_package(cli, tmp_path) -> None:
    result = invoke(cli, tmp_path)
    assert isinstance(result.exception, PackageError)
    assert "is not a save package" in str(result.exception)
