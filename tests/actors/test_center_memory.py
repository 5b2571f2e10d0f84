"""Memory you can trust, center side (issue 13): auto runs start from an estimate and are right-sized
after their first epoch; a running task holds max(reservation, peak) for its whole run; estimates are
learned from earlier packages of the same model and config and from running twins."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.ports import FakeDevices, FakeLauncher
from dlnest_ray.devices import FakeProbe
from dlnest_ray.errors import ConfigError, DlnestError
from dlnest_ray.savepack.package import SavePackage
from tests.projects import write_project

from ._helpers import info, launched, packages, status


@pytest.fixture
def one_gpu() -> FakeDevices:
    return FakeDevices(probe=FakeProbe(count=1, total_mb=16000))


@pytest.fixture
def center1(make_center: Callable[..., Center], one_gpu: FakeDevices) -> Center:
    return make_center(devices=one_gpu)


def _measured(package: str | Path, task_id: str, peak_mb: int) -> None:
    """What rank 0 of an earlier run left in its package: a segment with its measured peak."""
    pkg = SavePackage.open(package)
    index = pkg.begin_segment({"kind": "train", "task_id": task_id})
    pkg.end_segment(index, status="succeeded", finished_epoch=0, peak_gpu_mb=peak_mb)


def test_a_default_run_is_right_sized_after_its_first_epoch_and_a_twin_then_fits_beside_it(
    center1: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center1.run_train(str(project))
    b = center1.run_train(str(project))
    row = info(center1, a)
    assert row["memory_auto"] is True and row["memory_source"].startswith("90% of a GPU")
    assert launched(launcher) == [(a, "node-0", (0,), 14400)]  # DLNest's 90% of the 16000 MB GPU
    assert status(center1, b) == "PENDING"  # not before a has measured
    assert "node-0:gpu0 has 1600 MB left after " + a in info(center1, b)["wait_reason"]

    cap = center1.rank_memory(a, 0, 0, 4000)
    assert cap == math.ceil(4000 * 1.15) == 4600
    row = info(center1, a)
    assert (row["mb_per_gpu"], row["first_mb_per_gpu"], row["peak_mb"], row["right_sized"]) == (
        4600,
        14400,
        4000,
        True,
    )
    assert status(center1, b) == "RUNNING"  # placed into what was freed, with its twin's number
    assert info(center1, b)["memory_source"] == f"running twin {a} (peak 4000 MB)"
    assert launched(launcher)[1] == (b, "node-0", (0,), 4600)
    assert center1.rank_memory(a, 0, 1, 4100) == 4600  # right-sized once; the peak is still kept
    assert info(center1, a)["peak_mb"] == 4100
    log = "\n".join(center1.get_dlnest_output(0)["lines"])
    assert f"{a} right-sized after epoch 0: 14400 → 4600 MB per GPU (peak 4000 MB × 1.15)" in log


def test_an_explicit_reservation_is_kept_and_the_larger_of_it_and_the_peak_is_held(
    center1: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center1.run_train(str(project), memory_mb=6000)
    assert (
        info(center1, a)["memory_source"] == "given (--memory)" and info(center1, a)["memory_auto"] is False
    )
    assert center1.rank_memory(a, 0, 0, 3000) == 6000  # never lowered
    b = center1.run_train(str(project), memory_mb=9000)
    assert status(center1, b) == "RUNNING"  # 16000 − 6000 leaves 10000
    center1.task_finished(b, "SUCCEEDED")
    center1.rank_memory(a, 0, 1, 9000)  # a grew past its reservation (an analyzer has no cap): it holds 9000
    c = center1.run_train(str(project), memory_mb=8000)
    assert status(center1, c) == "PENDING"
    assert f"node-0:gpu0 has 7000 MB left after {a} (9000)" in info(center1, c)["wait_reason"]


def test_an_estimate_is_learned_from_earlier_packages_of_the_same_model_and_config(
    center1: Center, tmp_path: Path
) -> None:
    cfg = write_project(tmp_path / "p", epochs=3)
    first = center1.run_train(str(cfg), memory_mb=3000)
    _measured(info(center1, first)["package"], first, 4170)
    center1.task_finished(first, "SUCCEEDED")
    assert info(center1, first)["fingerprint"]

    again = center1.run_train(str(cfg))
    row = info(center1, again)
    assert row["memory_source"] == "learned from 1 earlier run (peak 4170 MB)"
    assert (
        row["memory_mb"] == math.ceil(4170 * 1.15)
        and row["fingerprint"] == info(center1, first)["fingerprint"]
    )
    center1.task_finished(again, "SUCCEEDED")

    longer = write_project(tmp_path / "p", epochs=9)  # epochs is memory-neutral by default
    assert info(center1, center1.run_train(str(longer)))["memory_source"].startswith("learned from 1")


def test_other_code_or_config_learns_nothing_and_neutral_keys_are_the_users(
    center1: Center, tmp_path: Path
) -> None:
    cfg = write_project(tmp_path / "p", hidden=16)
    first = center1.run_train(str(cfg), memory_mb=3000)
    _measured(info(center1, first)["package"], first, 4170)
    center1.task_finished(first, "SUCCEEDED")
    wider = write_project(tmp_path / "p", hidden=64)  # a wider model may need more memory
    row = info(center1, center1.run_train(str(wider)))
    assert row["memory_source"].startswith("90% of a GPU") and row["memory_mb"] is None


def test_bad_memory_neutral_keys_are_one_line_and_create_nothing(center1: Center, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", extra={"memory_neutral_keys": "epochs"})
    with pytest.raises(ConfigError, match="memory_neutral_keys must be a list of key names") as e:
        center1.run_train(str(cfg))
    assert "\n" not in str(e.value)
    assert packages(cfg) == []


def test_continue_starts_from_its_packages_own_peak(
    center1: Center, launcher: FakeLauncher, project: Path
) -> None:
    a = center1.run_train(str(project), memory_mb=3000)
    package = info(center1, a)["package"]
    _measured(package, a, 5000)
    SavePackage.open(package).save_checkpoint({"step": 0}, epoch=0)
    center1.task_finished(a, "FAILED", "boom")
    b = center1.continue_train(package)
    row = info(center1, b)
    assert row["memory_source"] == "its package's peak (5000 MB)" and row["memory_mb"] == 5750
    assert launched(launcher)[-1] == (b, "node-0", (0,), 5750)


def test_the_margin_is_a_setting_of_at_least_one(center1: Center, project: Path) -> None:
    with pytest.raises(DlnestError, match="the margin must be 1 or more"):
        center1.change_margin(0.9)
    center1.change_margin(1.5)
    assert center1.get_settings().margin == 1.5
    a = center1.run_train(str(project))
    assert center1.rank_memory(a, 0, 0, 2000) == 3000


def test_a_cpu_run_reports_no_peak_and_keeps_no_reservation(center1: Center, project: Path) -> None:
    a = center1.run_train(str(project), placement="cpu")
    assert center1.rank_memory(a, 0, 0, None) == 0
    row = info(center1, a)
    assert row["peak_mb"] is None and row["memory_auto"] is False and row["mb_per_gpu"] == 0


def test_the_end_of_a_run_takes_the_peak_its_package_recorded(center1: Center, project: Path) -> None:
    """An epoch that ran out of memory never reports its peak: the run's segment has it."""
    a = center1.run_train(str(project), memory_mb=4000)
    center1.rank_memory(a, 0, 0, 1300)
    _measured(info(center1, a)["package"], a, 5300)
    center1.task_finished(a, "FAILED", f"{a} ran out of its 4000 MB on gpu0 (peak 5300 MB): ...")
    assert info(center1, a)["peak_mb"] == 5300
