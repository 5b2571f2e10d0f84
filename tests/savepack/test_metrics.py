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


# ------------------------------------------------------------------------------------ epoch means
def test_a_list_that_grew_by_several_values_gives_the_epoch_mean_and_its_last_value() -> None:
    from dlnest_ray.savepack.metrics import list_marks

    log: dict = {"loss": [9.0, 9.0], "acc": [0.5], "lr": [0.1], "fresh": [], "n": 3}
    marks = list_marks(log)  # the epoch starts here
    log["loss"] += [0.5, torch.tensor(0.25), 0.75]  # every step
    log["acc"].append(torch.tensor([0.9]))  # once per epoch: its value, no mean
    log["fresh"] = [2.0, 4.0]  # replaced during the epoch: all of it is this epoch's
    row = scalar_row(log, marks)
    assert row["loss"] == pytest.approx(0.5) and row["loss.last"] == 0.75
    assert row["acc"] == pytest.approx(0.9) and "acc.last" not in row
    assert row["lr"] == 0.1 and "lr.last" not in row  # did not grow: keeps its value
    assert row["fresh"] == 3.0 and row["fresh.last"] == 4.0
    assert row["n"] == 3.0
    assert scalar_row(log)["loss"] == 0.75  # without marks (old callers): the last value


def test_a_list_cleared_in_place_counts_from_its_start() -> None:
    from dlnest_ray.savepack.metrics import list_marks

    log: dict = {"loss": [5.0, 5.0, 5.0]}
    marks = list_marks(log)
    log["loss"].clear()
    log["loss"] += [1.0, 3.0]
    assert scalar_row(log, marks)["loss"] == 2.0


def test_a_nan_step_makes_the_mean_nan() -> None:
    from dlnest_ray.savepack.metrics import list_marks

    log: dict = {"loss": []}
    marks = list_marks(log)
    log["loss"] += [1.0, float("nan")]
    assert math.isnan(scalar_row(log, marks)["loss"])


def test_training_records_epoch_means_of_the_step_losses(tmp_path: Path) -> None:
    """End to end: the trainer's rows are the means of each epoch's step losses, as recorded in the
    log dict the checkpoint keeps; the last step's value is loss.last; an old file still reads."""
    from dlnest_ray.runtime.trainer import TrainOptions, train
    from dlnest_ray.savepack.package import SavePackage
    from tests.projects import isolated_imports, write_project

    config = write_project(tmp_path / "proj", epochs=2, n_train=96, batch_size=32)
    pkg = SavePackage(config)
    path = pkg.save_to_new_dir()
    with isolated_imports():
        train(path, TrainOptions(cpu=True, capture_output=False))
    losses = SavePackage.open(path).state_dict()["log_dict"]["loss"]
    assert len(losses) == 6  # 3 steps per epoch
    rows = read_metrics(path).to_pylist()
    for epoch, row in enumerate(rows):
        steps = losses[3 * epoch : 3 * epoch + 3]
        assert row["loss"] == pytest.approx(sum(steps) / 3)
        assert row["loss.last"] == pytest.approx(steps[-1])
        assert row["acc"] is not None and "acc.last" not in row  # one value per epoch: no mean, no .last


def test_display_names_leave_the_last_companions_out() -> None:
    from dlnest_ray.savepack.compare import MetricsData
    from dlnest_ray.savepack.metrics import is_companion

    data = MetricsData(
        columns=["epoch", "step", "wall_time", "loss", "loss.last", "acc", "x.last"],
        rows=[
            {"epoch": 0, "step": 1, "wall_time": 1.0, "loss": 1.0, "loss.last": 2.0, "acc": 0.5, "x.last": 1}
        ],
    )
    assert data.metric_names == ["loss", "acc", "x.last"]  # x.last has no x: it is a metric of its own
    assert is_companion("loss.last", ["loss", "loss.last"]) and not is_companion("x.last", ["x.last"])
