"""metrics.parquet: one row per epoch with every scalar of the log dict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dlnest_ray.savepack.metrics import METRICS_FILE, MetricsLog, read_metrics, scalar_row

from ._helpers import new_package


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    return pkg.path


def test_columns_and_values(package: Path) -> None:
    log = MetricsLog(package)
    log.append(
        epoch=0,
        step=100,
        wall_time=1700000000.5,
        log={
            "loss": 0.25,
            "acc": torch.tensor([0.75]),
            "acc0d": torch.tensor(0.5),
            "np1": np.array([3.0]),
            "npscalar": np.float32(1.5),
            "count": 7,
            "flag": True,
            "history": [0.9, 0.8, 0.125],
            "tensor_history": [torch.tensor(1.0), torch.tensor(2.0)],
            "name": "resnet",
            "empty": [],
            "vector": torch.ones(3),
            "names": ["a", "b"],
            "nested": {"x": 1},
        },
    )
    table = pq.read_table(package / METRICS_FILE)
    assert table.column_names[:3] == ["epoch", "step", "wall_time"]
    assert set(table.column_names) == {
        "epoch", "step", "wall_time", "loss", "acc", "acc0d", "np1", "npscalar", "count", "flag", "history",
        "tensor_history",
    }  # fmt: skip
    assert table.schema.field("epoch").type == pa.int64()
    assert table.schema.field("step").type == pa.int64()
    assert table.schema.field("wall_time").type == pa.float64()
    row = table.to_pylist()[0]
    assert row == {
        "epoch": 0,
        "step": 100,
        "wall_time": 1700000000.5,
        "loss": 0.25,
        "acc": 0.75,
        "acc0d": 0.5,
        "np1": 3.0,
        "npscalar": 1.5,
        "count": 7.0,
        "flag": 1.0,
        "history": 0.125,
        "tensor_history": 2.0,
    }


def test_later_keys_get_nulls_before(package: Path) -> None:
    log = MetricsLog(package)
    log.append(epoch=0, step=10, wall_time=1.0, log={"loss": 1.0})
    log.append(epoch=1, step=20, wall_time=2.0, log={"loss": 0.5, "val_acc": 0.9})
    log.append(epoch=2, step=30, wall_time=3.0, log={"val_acc": 0.95})
    table = read_metrics(package)
    assert table.num_rows == 3
    assert table.column("epoch").to_pylist() == [0, 1, 2]
    assert table.column("step").to_pylist() == [10, 20, 30]
    assert table.column("loss").to_pylist() == [1.0, 0.5, None]
    assert table.column("val_acc").to_pylist() == [None, 0.9, 0.95]


def test_reserved_names_in_log_do_not_clobber(package: Path) -> None:
    row = MetricsLog(package).append(epoch=3, step=5, wall_time=9.0, log={"epoch": 99, "step": 98, "loss": 1})
    assert row["epoch"] == 3 and row["step"] == 5
    table = read_metrics(package / METRICS_FILE)
    assert table.column("epoch").to_pylist() == [3]
    assert table.column("step").to_pylist() == [5]


def test_drop_after(package: Path) -> None:
    log = MetricsLog(package)
    for e in range(5):
        log.append(epoch=e, step=e * 10, wall_time=float(e), log={"loss": 1.0 / (e + 1)})
    log.drop_after(2)
    assert read_metrics(package).column("epoch").to_pylist() == [0, 1, 2]
    # a re-run of epoch 3 after the resume
    log.append(epoch=3, step=31, wall_time=10.0, log={"loss": 0.0})
    table = read_metrics(package)
    assert table.column("epoch").to_pylist() == [0, 1, 2, 3]
    assert table.column("step").to_pylist() == [0, 10, 20, 31]


def test_same_epoch_replaces_row(package: Path) -> None:
    log = MetricsLog(package)
    log.append(epoch=0, step=1, wall_time=1.0, log={"loss": 1.0})
    log.append(epoch=0, step=2, wall_time=2.0, log={"loss": 0.5})
    table = read_metrics(package)
    assert table.to_pylist() == [{"epoch": 0, "step": 2, "wall_time": 2.0, "loss": 0.5}]


def test_reload_existing_rows(package: Path) -> None:
    first = MetricsLog(package)
    first.append(epoch=0, step=10, wall_time=1.0, log={"loss": 1.0, "a": 2})
    first.append(epoch=1, step=20, wall_time=2.0, log={"loss": 0.5})
    second = MetricsLog(package)
    assert [r["epoch"] for r in second.rows] == [0, 1]
    second.append(epoch=2, step=30, wall_time=3.0, log={"loss": 0.25, "b": 1})
    table = read_metrics(package)
    assert table.column("epoch").to_pylist() == [0, 1, 2]
    assert table.column("loss").to_pylist() == [1.0, 0.5, 0.25]
    assert table.column("a").to_pylist() == [2.0, None, None]
    assert table.column("b").to_pylist() == [None, None, 1.0]
    third = MetricsLog(package)
    third.drop_after(0)
    assert MetricsLog(package).rows == [
        {"epoch": 0, "step": 10, "wall_time": 1.0, "loss": 1.0, "a": 2.0, "b": None}
    ]


def test_no_file_until_first_row(package: Path) -> None:
    log = MetricsLog(package)
    assert log.rows == []
    assert not (package / METRICS_FILE).exists()
    log.drop_after(5)
    assert not (package / METRICS_FILE).exists()


def test_nan_and_inf_are_kept(package: Path) -> None:
    MetricsLog(package).append(epoch=0, step=0, wall_time=0.0, log={"nan": float("nan"), "inf": math.inf})
    row = read_metrics(package).to_pylist()[0]
    assert math.isnan(row["nan"]) and row["inf"] == math.inf


def test_scalar_row_skips_non_scalars() -> None:
    assert scalar_row({"s": "x", "e": [], "v": torch.zeros(2), "d": {"a": 1}, "n": None, "ok": 2}) == {
        "ok": 2.0
    }
    assert scalar_row({"t": (1, 2, 3)}) == {"t": 3.0}
