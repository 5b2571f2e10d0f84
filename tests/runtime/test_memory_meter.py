"""GPU memory on the rank side: the fake meter (``DLNEST_RAY_FAKE_GPUS`` + ``fake_gpu_mb``), the peak in
metrics.parquet and the segment, ``memory_report`` and the caps it returns, and the one line a run that
runs out of memory fails with. CPU only, no Ray; the real meter's checks are ``gpu``-marked."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from dlnest_ray import SavePackage, TrainingFailed
from dlnest_ray.devices import FAKE_GPUS_ENV
from dlnest_ray.errors import DlnestError
from dlnest_ray.runtime.memory import (
    FAKE_CONTEXT_MB,
    CudaMeter,
    FakeMeter,
    fake_allocations,
    meter_for,
    out_of_memory_error,
    out_of_memory_line,
    out_of_memory_peak,
    suggested_memory_mb,
    tried_to_allocate_mb,
)
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import read_metrics
from dlnest_ray.savepack.records import Segment
from tests.projects import read_hooks, write_project

from .ddp_helpers import run_ranks

MARGIN = 1.15


def expected_line(task: str, cap: int, gpu: str, peak: int, n_gpus: int = 1) -> str:
    """The contract's line, computed independently of the code under test."""
    more = math.ceil(round(peak * MARGIN / 100, 6)) * 100 * n_gpus
    return f"{task} ran out of its {cap} MB on {gpu} (peak {peak} MB): resubmit with --memory {more} or more"


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_GPUS_ENV, "2x16000")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")


@pytest.fixture
def no_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def package(tmp_path: Path, *, epochs: int, fake_gpu_mb: Any = None, **kw: Any) -> Path:
    extra = {} if fake_gpu_mb is None else {"fake_gpu_mb": fake_gpu_mb}
    cfg = write_project(tmp_path / "proj", epochs=epochs, n_train=64, n_val=32, extra=extra, **kw)
    return SavePackage(cfg).save_to_new_dir()


class Reports:
    """A ``memory_report`` that records its calls and answers from ``caps`` (epoch → new cap)."""

    def __init__(self, caps: dict[int, int] | None = None) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self.caps = caps or {}

    def __call__(self, epoch: int, peak: int | None) -> int | None:
        self.calls.append((epoch, peak))
        return self.caps.get(epoch)


def segment(pkg: Path) -> dict[str, Any]:
    seg: dict[str, Any] = json.loads((pkg / "_package.json").read_text())["segments"][-1]
    return seg


def peaks_column(pkg: Path) -> list[Any]:
    return list(read_metrics(pkg).column("gpu_peak_mb").to_pylist())


# ------------------------------------------------------------------------------------------ pure parts
def test_fake_allocations_accepts_an_int_or_a_list() -> None:
    assert fake_allocations({}) == (0,)
    assert fake_allocations({"fake_gpu_mb": 4000}) == (4000,)
    assert fake_allocations({"fake_gpu_mb": [1000, 3000]}) == (1000, 3000)


@pytest.mark.parametrize("bad", [-1, "4000", 1.5, [], [1000, "x"], True, {"a": 1}])
def test_fake_allocations_rejects_anything_else_in_one_line(bad: Any) -> None:
    with pytest.raises(DlnestError) as info:
        fake_allocations({"fake_gpu_mb": bad})
    assert "fake_gpu_mb" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("message", "mb"),
    [
        ("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.1 GiB", 20),
        ("Tried to allocate 1.50 GiB (GPU 0; 15.7 GiB total capacity)", 1536),
        ("Tried to allocate 512.00 KiB.", 1),
        ("Tried to allocate 2097152 bytes", 2),
        ("out of memory", None),
    ],
)
def test_tried_to_allocate_reads_torch_messages(message: str, mb: int | None) -> None:
    assert tried_to_allocate_mb(message) == mb


def test_suggestion_rounds_up_to_hundreds_times_the_gpus() -> None:
    assert suggested_memory_mb(6030, 1.15, 1) == 7000  # 6934.5
    assert suggested_memory_mb(6000, 1.15, 1) == 6900  # exactly 6900, not 7000 through float error
    assert suggested_memory_mb(6330, 1.15, 1) == 7300
    assert suggested_memory_mb(6030, 1.15, 2) == 14000
    assert suggested_memory_mb(100, 1.0, 1) == 100


def test_the_out_of_memory_line() -> None:
    line = out_of_memory_line(who="T_0007", gpu="gpu0", cap_mb=6000, peak_mb=6030, margin=1.15, n_gpus=1)
    assert line == "T_0007 ran out of its 6000 MB on gpu0 (peak 6030 MB): resubmit with --memory 7000 or more"
    uncapped = out_of_memory_line(who="the run", gpu="gpu2", cap_mb=None, peak_mb=900, margin=1.15, n_gpus=1)
    assert uncapped == "the run ran out of memory on gpu2 (peak 900 MB): resubmit with --memory 1100 or more"


def test_out_of_memory_peak_is_at_least_cap_plus_the_failed_allocation() -> None:
    msg = "CUDA out of memory. Tried to allocate 512.00 MiB."
    assert out_of_memory_peak(5600, 6000, msg) == 6512
    assert out_of_memory_peak(7000, 6000, msg) == 7000  # the meter saw more
    assert out_of_memory_peak(5600, 6000, "out of memory") == 5600
    assert out_of_memory_peak(5600, None, msg) == 6112  # no cap: what it had plus what it asked for
    assert out_of_memory_peak(None, None, "out of memory") is None


def test_out_of_memory_error_sees_torch_oom_and_what_was_raised_from_it() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory")
    assert out_of_memory_error(oom) is oom
    wrapped = RuntimeError("step failed")
    wrapped.__cause__ = oom
    assert out_of_memory_error(wrapped) is oom
    assert out_of_memory_error(RuntimeError("CUDA out of memory")) is None


def test_fake_meter_peaks_caps_and_raises_like_the_allocator() -> None:
    meter = FakeMeter(allocations=[1000, 3000], total_mb=8000, gpu="gpu1")
    assert meter.peak_mb() == FAKE_CONTEXT_MB and meter.cap_mb is None and meter.gpu == "gpu1"
    meter.after_training(0)
    assert meter.peak_mb() == 1000 + FAKE_CONTEXT_MB
    meter.reset()
    assert meter.peak_mb() == FAKE_CONTEXT_MB  # each epoch's allocation is its own working set
    meter.after_training(5)  # past the list's end: its last item
    assert meter.peak_mb() == 3000 + FAKE_CONTEXT_MB
    meter.reset()
    meter.set_cap(3000)
    assert meter.cap_mb == 3000
    with pytest.raises(torch.OutOfMemoryError) as info:
        meter.after_training(1)  # 3300 > 3000
    assert meter.peak_mb() == 3000  # filled up to the cap, as torch's peak would be
    assert out_of_memory_peak(meter.peak_mb(), 3000, str(info.value)) == 3000 + FAKE_CONTEXT_MB
    meter.set_cap(None)
    small = FakeMeter(allocations=[8000], total_mb=8000)
    with pytest.raises(torch.OutOfMemoryError):  # no cap: the fake GPU's size is the limit
        small.after_training(0)


def test_meter_for_picks_the_fake_only_with_fake_gpus_and_a_visible_gpu() -> None:
    cpu = torch.device("cpu")
    args = {"fake_gpu_mb": 2000}
    fake = meter_for(cpu, args, {FAKE_GPUS_ENV: "2x16000", "CUDA_VISIBLE_DEVICES": "1"})
    assert isinstance(fake, FakeMeter)
    assert (fake.gpu, fake.total_mb, fake.allocations) == ("gpu1", 16000, (2000,))
    assert meter_for(cpu, args, {FAKE_GPUS_ENV: "2x16000", "CUDA_VISIBLE_DEVICES": ""}) is None
    assert meter_for(cpu, args, {"CUDA_VISIBLE_DEVICES": "0"}) is None
    assert meter_for(cpu, args, {}) is None
    with pytest.raises(DlnestError, match="fake_gpu_mb"):
        meter_for(cpu, {"fake_gpu_mb": "lots"}, {FAKE_GPUS_ENV: "1x8000", "CUDA_VISIBLE_DEVICES": "0"})


def test_segment_reserved_mb_round_trips_and_old_segments_read() -> None:
    old = Segment.from_json({"kind": "train", "peak_gpu_mb": 4170})
    assert old.reserved_mb is None and old.peak_gpu_mb == 4170
    seg = Segment.from_json({"kind": "train", "reserved_mb": 6000})
    assert seg.reserved_mb == 6000 and seg.to_json()["reserved_mb"] == 6000
    assert Segment.from_json(seg.to_json()) == seg


# ------------------------------------------------------------------------------------------ runs
@pytest.mark.usefixtures("fake_gpus")
def test_fake_run_records_each_epochs_peak_and_reports_it(tmp_path: Path) -> None:
    pkg = package(tmp_path, epochs=3, fake_gpu_mb=2500)
    reports = Reports()
    train(pkg, TrainOptions(cpu=True, memory_report=reports, task_id="T_0001"))
    peak = 2500 + FAKE_CONTEXT_MB
    assert peaks_column(pkg) == [peak] * 3
    assert reports.calls == [(0, peak), (1, peak), (2, peak)]
    seg = segment(pkg)
    assert seg["status"] == "succeeded"
    assert seg["peak_gpu_mb"] == peak and seg["reserved_mb"] is None


@pytest.mark.usefixtures("fake_gpus")
def test_a_list_makes_the_peak_grow_partway(tmp_path: Path) -> None:
    pkg = package(tmp_path, epochs=4, fake_gpu_mb=[1000, 1000, 4000])
    reports = Reports()
    train(pkg, TrainOptions(cpu=True, memory_report=reports, memory_cap_mb=6000))
    expected = [1000 + FAKE_CONTEXT_MB] * 2 + [4000 + FAKE_CONTEXT_MB] * 2
    assert peaks_column(pkg) == expected
    assert [p for _, p in reports.calls] == expected
    seg = segment(pkg)
    assert seg["peak_gpu_mb"] == 4000 + FAKE_CONTEXT_MB and seg["reserved_mb"] == 6000


@pytest.mark.usefixtures("fake_gpus")
def test_skipped_epochs_neither_allocate_nor_report(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.txt"
    pkg = package(
        tmp_path, epochs=3, fake_gpu_mb=[1000, 2000, 3000], skip={"before_one_epoch": [1]}, hook_file=hooks
    )
    reports = Reports()
    train(pkg, TrainOptions(cpu=True, memory_report=reports))
    assert read_hooks(hooks).count("before_one_epoch") == 4  # one of them skipped
    assert read_hooks(hooks).count("before_validation") == 3
    assert reports.calls == [(e, a + FAKE_CONTEXT_MB) for e, a in enumerate([1000, 2000, 3000])]
    assert read_metrics(pkg).column("epoch").to_pylist() == [0, 1, 2]
    assert peaks_column(pkg) == [1300, 2300, 3300]


@pytest.mark.usefixtures("fake_gpus")
def test_a_cap_smaller_than_the_allocation_fails_with_one_line(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.txt"
    pkg = package(tmp_path, epochs=3, fake_gpu_mb=6030, hook_file=hooks)
    reports = Reports()
    with pytest.raises(TrainingFailed) as info:
        train(pkg, TrainOptions(cpu=True, memory_cap_mb=6000, memory_report=reports, task_id="T_0007"))
    line = expected_line("T_0007", 6000, "gpu0", 6030 + FAKE_CONTEXT_MB)
    assert line.endswith("--memory 7300 or more")  # the example, numbers checked by hand
    assert str(info.value) == line
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert reports.calls == []  # the epoch never ended
    calls = read_hooks(hooks)
    assert "before_validation" not in calls  # it failed after training, before validation
    assert calls[-1] == "after_all"  # teardown as for any failure
    seg = segment(pkg)
    assert seg["status"] == "failed" and seg["error"] == line
    assert seg["peak_gpu_mb"] == 6030 + FAKE_CONTEXT_MB and seg["reserved_mb"] == 6000
    assert line in (pkg / "_output.txt").read_text()


@pytest.mark.usefixtures("fake_gpus")
def test_the_foreground_line_says_the_run_and_the_physical_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    pkg = package(tmp_path, epochs=1, fake_gpu_mb=5000)
    with pytest.raises(TrainingFailed) as info:
        train(pkg, TrainOptions(cpu=True, memory_cap_mb=4000))
    assert str(info.value) == expected_line("the run", 4000, "gpu3", 5000 + FAKE_CONTEXT_MB)


@pytest.mark.usefixtures("fake_gpus")
def test_a_returned_cap_is_applied_at_the_next_epoch(tmp_path: Path) -> None:
    allocations = [2000, 2000, 5000]
    # the same run succeeds under its first cap ...
    pkg = package(tmp_path / "a", epochs=3, fake_gpu_mb=allocations)
    train(pkg, TrainOptions(cpu=True, memory_cap_mb=6000, memory_report=Reports()))
    assert peaks_column(pkg) == [2300, 2300, 5300]
    # ... but right-sized after epoch 0 to 2800 MB, epoch 2's 5300 MB no longer fits
    pkg = package(tmp_path / "b", epochs=3, fake_gpu_mb=allocations)
    reports = Reports(caps={0: 2800})
    with pytest.raises(TrainingFailed) as info:
        train(pkg, TrainOptions(cpu=True, memory_cap_mb=6000, memory_report=reports, task_id="T_0003"))
    assert reports.calls == [(0, 2300), (1, 2300)]
    assert str(info.value) == expected_line("T_0003", 2800, "gpu0", 5300)
    assert peaks_column(pkg) == [2300, 2300]
    seg = segment(pkg)
    assert seg["reserved_mb"] == 6000  # the cap at the segment's start
    assert seg["peak_gpu_mb"] == 5300 and seg["finished_epoch"] == 2


@pytest.mark.usefixtures("fake_gpus")
def test_out_of_memory_in_user_code_reports_cap_plus_the_failed_allocation(tmp_path: Path) -> None:
    pkg = package(tmp_path, epochs=3, fake_gpu_mb=1000, fail_at_epoch=1)
    model = pkg / "Model" / "Model.py"
    text = model.read_text()
    injected = 'raise RuntimeError(f"injected failure at epoch {epoch}")'
    assert injected in text
    model.write_text(
        text.replace(
            injected, 'raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")'
        )
    )
    with pytest.raises(TrainingFailed) as info:
        train(pkg, TrainOptions(cpu=True, memory_cap_mb=4000, task_id="T_0009"))
    assert str(info.value) == expected_line("T_0009", 4000, "gpu0", 4000 + 512)
    assert segment(pkg)["peak_gpu_mb"] == 4512


@pytest.mark.usefixtures("no_fake_gpus")
def test_a_plain_cpu_run_measures_nothing(tmp_path: Path) -> None:
    pkg = package(tmp_path, epochs=2, fake_gpu_mb=6030)  # the key alone fakes nothing
    reports = Reports(caps={0: 10})  # a cap for a run without a meter changes nothing
    train(pkg, TrainOptions(cpu=True, memory_cap_mb=100, memory_report=reports))
    assert "gpu_peak_mb" not in read_metrics(pkg).column_names
    assert reports.calls == [(0, None), (1, None)]
    seg = segment(pkg)
    assert seg["status"] == "succeeded" and seg["peak_gpu_mb"] is None


def test_a_plain_cpu_run_raising_oom_fails_as_any_failure(tmp_path: Path, no_fake_gpus: None) -> None:
    del no_fake_gpus
    pkg = package(tmp_path, epochs=2, fail_at_epoch=0)
    model = pkg / "Model" / "Model.py"
    injected = 'raise RuntimeError(f"injected failure at epoch {epoch}")'
    model.write_text(model.read_text().replace(injected, 'raise torch.OutOfMemoryError("out of memory")'))
    with pytest.raises(TrainingFailed, match=r"^training failed: OutOfMemoryError: out of memory"):
        train(pkg, TrainOptions(cpu=True, task_id="T_0001"))


# ------------------------------------------------------------------------------------------ DDP
DDP_CHILD = """
import json, os, sys
from dlnest_ray.runtime import trainer
from dlnest_ray.runtime.memory import FakeMeter
rank = int(os.environ["RANK"])
allocations = {allocations!r}[rank]
trainer.meter_for = lambda device, args, environ: FakeMeter(allocations=allocations, total_mb=16000)
calls = []
def report(epoch, peak):
    calls.append([epoch, peak])
    return None
trainer.train({pkg!r}, trainer.TrainOptions(cpu=True, memory_report=report))
with open(os.path.join({out!r}, f"report{{rank}}.json"), "w") as f:
    json.dump(calls, f)
"""


@pytest.mark.slow
def test_ddp_reports_the_largest_peak_over_the_ranks(tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "proj", epochs=2, n_train=64, n_val=32, extra={"ddp_timeout_s": 60})
    pkg = SavePackage(cfg).save_to_new_dir()
    allocations = {0: [1000, 1000], 1: [2000, 500]}  # rank 1 peaks first, rank 0 later
    code = DDP_CHILD.format(allocations=allocations, pkg=str(pkg), out=str(tmp_path))
    codes, details = run_ranks(pkg, tmp_path, code=code)
    assert codes == [0, 0], details
    expected = [[0, 2000 + FAKE_CONTEXT_MB], [1, 1000 + FAKE_CONTEXT_MB]]
    for rank in (0, 1):  # every rank hears the same, largest peak
        assert json.loads((tmp_path / f"report{rank}.json").read_text()) == expected
    assert peaks_column(pkg) == [p for _, p in expected]
    assert segment(pkg)["peak_gpu_mb"] == 2000 + FAKE_CONTEXT_MB


# ------------------------------------------------------------------------------------------ real GPU
@pytest.mark.gpu
def test_cuda_meter_measures_and_caps_the_allocator() -> None:
    device = torch.device("cuda", 0)
    meter = CudaMeter(device)
    context = meter.measure_context()
    assert context > 0
    meter.reset()
    before = meter.peak_mb()
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    assert meter.peak_mb() >= before + 200  # 256 MB, the context measured again (NVML's rounding)
    del x
    torch.cuda.empty_cache()
    meter.set_cap(meter.context_mb() + 512)
    try:
        torch.empty(128 * 2**20, dtype=torch.uint8, device=device)  # fits under the cap
        with pytest.raises(torch.OutOfMemoryError) as info:
            torch.empty(1024 * 2**20, dtype=torch.uint8, device=device)
        assert tried_to_allocate_mb(str(info.value)) == 1024
    finally:
        meter.set_cap(None)
        torch.cuda.empty_cache()


@pytest.mark.gpu
def test_a_gpu_run_records_its_peak_and_fails_alone_over_its_cap(tmp_path: Path) -> None:
    pkg = package(tmp_path / "a", epochs=2)
    reports = Reports()
    train(pkg, TrainOptions(gpus=(0,), memory_report=reports))
    peaks = peaks_column(pkg)
    assert len(peaks) == 2 and all(p > 0 for p in peaks)
    assert [p for _, p in reports.calls] == peaks
    assert segment(pkg)["peak_gpu_mb"] == max(peaks)
    # a cap below the context leaves the allocator nothing: torch's OutOfMemoryError, then the line
    pkg = package(tmp_path / "b", epochs=1)
    with pytest.raises(
        TrainingFailed, match=r"^the run ran out of its 1 MB on gpu\d+ \(peak \d+ MB\): resubmit"
    ):
        train(pkg, TrainOptions(gpus=(0,), memory_cap_mb=1))
    torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")  # the run took its cap away when it closed
