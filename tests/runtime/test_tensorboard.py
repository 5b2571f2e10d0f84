"""TensorBoard scalars (config key ``"tensorboard": true``): rank 0 writes each epoch's metrics row to
``<package>/tb/``; the events read back equal metrics.parquet, also across resumes and under DDP. A
missing ``tensorboard`` package fails the run at its start with the install hint."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray import ConfigError, DlnestError, SavePackage, TrainingFailed
from dlnest_ray.runtime.tensorboard import MISSING_PACKAGE, TB_DIR
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from tests.projects import write_project

from .ddp_helpers import run_ranks

CPU = TrainOptions(cpu=True)
NOT_SCALARS = ("epoch", "step", "wall_time")


@pytest.fixture
def tensorboard() -> Any:
    return pytest.importorskip("tensorboard")


def tb_package(tmp_path: Path, **extra: Any) -> Path:
    cfg = write_project(tmp_path / "proj", epochs=2, extra=extra)
    return SavePackage(cfg).save_to_new_dir()


def read_events(pkg: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, value, wall_time)]}`` as TensorBoard shows them (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(pkg / TB_DIR), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_equal_metrics(pkg: Path) -> list[dict[str, Any]]:
    rows = read_metrics(pkg).to_pylist()
    events = read_events(pkg)
    keys = [k for k in rows[0] if k not in NOT_SCALARS]
    assert keys and sorted(events) == sorted(keys)
    for key in keys:
        expected = [(r["epoch"], r[key], r["wall_time"]) for r in rows if r[key] is not None]
        got = events[key]
        assert [s for s, _, _ in got] == [s for s, _, _ in expected], key  # global step = epoch, once each
        for (_, value, wall), (_, want, want_wall) in zip(got, expected, strict=True):
            if math.isnan(want):
                assert math.isnan(value), key
            else:
                assert value == pytest.approx(want, rel=1e-6, abs=1e-7), key  # events hold float32
            assert wall == pytest.approx(want_wall, abs=1e-3), key
    return rows


def test_scalars_equal_metrics(tmp_path, tensorboard):
    pkg = tb_package(tmp_path, tensorboard=True)
    train(pkg, CPU)
    rows = assert_events_equal_metrics(pkg)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"loss", "acc"} <= set(read_events(pkg))
    assert len(list((pkg / TB_DIR).glob("events.out.tfevents.*"))) == 1


def test_resume_appends_to_the_same_folder(tmp_path, tensorboard):
    pkg = tb_package(tmp_path, tensorboard=True)
    train(pkg, CPU)
    train(pkg, TrainOptions(cpu=True, resume=True))  # one more epoch: 2
    rows = assert_events_equal_metrics(pkg)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert len(list((pkg / TB_DIR).glob("events.out.tfevents.*"))) == 2  # one file per run segment


def test_resume_from_an_older_checkpoint_purges_the_abandoned_epochs(tmp_path, tensorboard):
    pkg = tb_package(tmp_path, tensorboard=True)
    train(pkg, CPU)
    first = read_events(pkg)
    train(pkg, TrainOptions(cpu=True, resume=True, ckpt_id=0))  # epoch 1 again
    rows = assert_events_equal_metrics(pkg)  # epoch 1 once, from the new branch
    assert [r["epoch"] for r in rows] == [0, 1]
    assert read_events(pkg)["loss"][1][2] > first["loss"][1][2]  # the new event, by its wall time


def test_key_off_writes_nothing(tmp_path):
    pkg = tb_package(tmp_path)
    train(pkg, CPU)
    assert not (pkg / TB_DIR).exists()
    assert [r["epoch"] for r in read_metrics(pkg).to_pylist()] == [0, 1]


def test_key_false_writes_nothing(tmp_path):
    pkg = tb_package(tmp_path, tensorboard=False)
    train(pkg, CPU)
    assert not (pkg / TB_DIR).exists()


def test_missing_package_fails_at_the_start(tmp_path, monkeypatch):
    """Needs no tensorboard: its import is made to fail (None in sys.modules), whatever is installed."""
    hooks = tmp_path / "hooks.txt"
    cfg = write_project(tmp_path / "proj", epochs=2, hook_file=hooks, extra={"tensorboard": True})
    pkg = SavePackage(cfg).save_to_new_dir()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(DlnestError) as info:
        train(pkg, CPU)

    assert isinstance(info.value, TrainingFailed)
    assert str(info.value).startswith(MISSING_PACKAGE)
    assert "pip install 'dlnest-ray[tensorboard]'" in str(info.value)
    assert not hooks.exists()  # no user code ran: not even before_all
    assert not (pkg / TB_DIR).exists() and not (pkg / "metrics.parquet").exists()
    seg = json.loads((pkg / "_package.json").read_text())["segments"][-1]
    assert seg["status"] == "failed" and MISSING_PACKAGE in seg["error"]
    assert MISSING_PACKAGE in (pkg / "_output.txt").read_text()


def test_a_value_other_than_a_bool_is_a_config_error(tmp_path):
    pkg = tb_package(tmp_path, tensorboard="yes")
    with pytest.raises(TrainingFailed) as info:
        train(pkg, CPU)
    assert isinstance(info.value.__cause__, ConfigError)
    assert 'config key "tensorboard" must be true or false' in str(info.value)


def test_failed_run_closes_the_writer_with_the_epochs_before(tmp_path, tensorboard):
    cfg = write_project(tmp_path / "proj", epochs=3, fail_at_epoch=1, extra={"tensorboard": True})
    pkg = SavePackage(cfg).save_to_new_dir()
    with pytest.raises(TrainingFailed):
        train(pkg, CPU)
    rows = assert_events_equal_metrics(pkg)
    assert [r["epoch"] for r in rows] == [0]


@pytest.mark.slow
def test_ddp_rank0_writes_once(tmp_path, tensorboard):
    pkg = tb_package(tmp_path, tensorboard=True, ddp_timeout_s=60)
    codes, details = run_ranks(pkg, tmp_path)
    assert codes == [0, 0], details
    assert len(list((pkg / TB_DIR).glob("events.out.tfevents.*"))) == 1  # rank 0 only
    assert [r["epoch"] for r in assert_events_equal_metrics(pkg)] == [0, 1]
