"""``compare`` shows GPU memory reserved → measured per package (row ``memory (MB)``) and the
``gpu_peak_mb`` metrics column like any metric; ``--json`` adds ``reserved_mb``. Packages are made
without training: their ``_package.json`` segments and metrics.parquet are written as a GPU run leaves
them (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray import SavePackage
from dlnest_ray.cli.app import main
from dlnest_ray.savepack import layout
from tests.projects import isolated_imports, write_project


def package(folder: Path, segment: dict[str, Any], peaks: list[int | None] | None) -> Path:
    """A package with one ended segment (``segment`` laid over it) and, with ``peaks``, one metrics row
    per epoch (``gpu_peak_mb`` the given value)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with isolated_imports():
        pkg = SavePackage(write_project(folder, epochs=2)).save_to_new_dir()
    manifest = json.loads((pkg / "_package.json").read_text())
    base = {"kind": "train", "started": 100.0, "ended": 160.0, "status": "succeeded", "finished_epoch": 1}
    manifest["segments"] = [base | {"devices": ["cuda:0: H100"], "world_size": 1} | segment]
    (pkg / "_package.json").write_text(json.dumps(manifest))
    if peaks is not None:
        rows = [
            {"epoch": e, "step": 10 * (e + 1), "wall_time": float(e), "loss": 1.0 / (e + 1), "gpu_peak_mb": p}
            for e, p in enumerate(peaks)
        ]
        pq.write_table(pa.Table.from_pylist(rows), layout.metrics_path(pkg))
    return pkg


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("memory")
    queued = package(
        root / "a", {"reserved_mb": 6000, "peak_gpu_mb": 4210, "description": "queued"}, [4100, 4210]
    )
    foreground = package(root / "b", {"peak_gpu_mb": 3900, "description": "foreground"}, [3900, 3800])
    cpu = package(root / "c", {"devices": ["cpu"], "description": "cpu"}, None)
    return queued, foreground, cpu


def compare(args: list[Any], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    return out


def row(text: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{text}")


def test_compare_shows_reserved_and_measured(
    packages: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = compare(list(packages), capsys)
    assert row(out, "memory (MB)") == ["6000 → 4210", "→ 3900", "-"]
    assert "peak GPU MB" not in out  # one memory row, not two


def test_compare_shows_gpu_peak_mb_like_other_metrics(
    packages: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = compare(list(packages[:2]), capsys)
    assert row(out, "gpu_peak_mb final") == ["4210", "3800"]
    assert row(out, "gpu_peak_mb best (min)")[0].startswith("4100 @0")


def test_compare_json_adds_reserved_mb(
    packages: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = json.loads(compare([*packages, "--json"], capsys))
    assert [(r["reserved_mb"], r["peak_gpu_mb"]) for r in out["runs"]] == [
        (6000, 4210),
        (None, 3900),
        (None, None),
    ]
    assert out["runs"][0]["metrics"]["gpu_peak_mb"]["final"] == 4210


def test_compare_without_any_gpu_memory_has_no_memory_row(
    packages: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_cpu = package(tmp_path / "d", {"devices": ["cpu"], "description": "cpu 2"}, None)
    out = compare([packages[2], other_cpu], capsys)
    assert "memory (MB)" not in out
