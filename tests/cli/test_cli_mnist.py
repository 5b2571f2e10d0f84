"""End to end on real MNIST: ``new --mnist``, one epoch of ``train --cpu``, then ``analyze``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlnest_ray.savepack.metrics import read_metrics
from tests.cli.helpers import Cli, package_from, run_cli

pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_dir) -> tuple[Path, Path, Cli]:
    """The one MNIST training of the suite: a fresh project, epochs=1 via a freq config, on the CPU."""
    project = tmp_path_factory.mktemp("e2e") / "mnist"
    created = run_cli("new", project, "--mnist")
    assert created.returncode == 0, str(created)
    (project / "one_epoch.json").write_text(json.dumps({"epochs": 1}))
    env = {"DLNEST_MNIST_DIR": str(mnist_dir)}
    result = run_cli(
        "train", "root_config.json", "-f", "one_epoch.json", "--cpu", cwd=project, env=env, timeout=540
    )
    assert result.returncode == 0, str(result)
    return project, package_from(result), result


def test_training_one_epoch(mnist_run):
    project, pkg, result = mnist_run
    assert pkg.parent == project / "Saves"
    assert "finished epoch 0" in result.stdout
    rows = read_metrics(pkg).to_pylist()
    assert [r["epoch"] for r in rows] == [0]
    assert rows[-1]["acc"] > 0.8  # one epoch of a CNN on MNIST
    manifest = json.loads((pkg / "_package.json").read_text())
    assert manifest["segments"][0]["status"] == "succeeded"
    assert manifest["checkpoints"] and all(c["sha256"] for c in manifest["checkpoints"].values())


def test_analyze_accuracy_matches_the_recorded_metric(mnist_run, mnist_dir):
    project, pkg, train_result = mnist_run
    before = snapshot(pkg)
    result = run_cli(
        "analyze",
        pkg,
        "--script",
        "AnalyzeScripts/getAcc.py",
        "--cpu",
        cwd=project,
        env={"DLNEST_MNIST_DIR": str(mnist_dir)},
    )
    assert result.returncode == 0, str(result)
    printed = re.search(r"^result: ([0-9.e-]+)$", result.stdout, flags=re.MULTILINE)
    assert printed, str(result)
    acc = float(printed.group(1))
    assert acc == read_metrics(pkg).to_pylist()[-1]["acc"]
    assert f"Accuracy: {acc:.4f}" in result.stdout
    line = f"val acc {acc:.4f}"
    assert line in (pkg / "_output.txt").read_text()
    assert line in train_result.stdout
    assert snapshot(pkg) == before  # analysis changes nothing in the package


def test_analyze_without_a_checkpoint(mnist_run, mnist_dir):
    project, pkg, _ = mnist_run
    before = snapshot(pkg)
    result = run_cli(
        "analyze",
        pkg,
        "--script",
        "AnalyzeScripts/showModel.py",
        "--ckpt",
        "-2",
        "--cpu",
        cwd=project,
        env={"DLNEST_MNIST_DIR": str(mnist_dir)},
    )
    assert result.returncode == 0, str(result)
    assert "MNISTCNN" in result.stdout and "Parameters:" in result.stdout
    assert "result:" not in result.stdout  # the script returns None
    assert snapshot(pkg) == before


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_metrics_of_the_mnist_package(mnist_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, pkg, _ = mnist_run
    row = read_metrics(pkg).to_pylist()[-1]
    shown = run_cli("metrics", pkg, "--json")
    assert shown.returncode == 0, str(shown)
    assert json.loads(shown.stdout)["rows"][-1]["acc"] == row["acc"]
    plot = tmp_path / "curves.png"
    drawn = run_cli("metrics", pkg, "--keys", "loss,acc", "--plot", plot)
    assert drawn.returncode == 0, str(drawn)
    assert f"{row['acc']:g}"[:5] in drawn.stdout
    assert _png_size(plot) == (800, 500)


def test_compare_the_mnist_package_with_a_variant(mnist_run, tmp_path):
    """A copy of the package whose recorded lr differs: compare names that key and both runs' metrics."""
    import shutil

    pytest.importorskip("matplotlib")
    _, pkg, _ = mnist_run
    variant = tmp_path / "variant"
    shutil.copytree(pkg, variant)
    args = json.loads((variant / "args.json").read_text())
    args["model_config"]["lr"] = 0.003
    (variant / "args.json").write_text(json.dumps(args))
    got = run_cli("compare", pkg, variant, "--json")
    assert got.returncode == 0, str(got)
    data = json.loads(got.stdout)
    assert json.dumps(data).count("model_config.lr") >= 1 and "root_file_path" not in got.stdout
    plot = tmp_path / "acc.png"
    drawn = run_cli("compare", pkg, variant, "--plot", plot, "--metric", "acc")
    assert drawn.returncode == 0, str(drawn)
    assert "model_config.lr" in drawn.stdout and "0.003" in drawn.stdout
    assert _png_size(plot) == (800, 500)
