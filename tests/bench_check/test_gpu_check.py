"""bench/gpu_check.sh: its pure checks, its argument and install handling, and its whole dry run on the
CPU (fake GPUs: three default runs right-size and run together, one outgrows --memory and fails alone)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
OOM_LINE = "T_0004 ran out of its 2000 MB on gpu0 (peak 2800 MB): resubmit with --memory 3300 or more"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gc = _load()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OUT", "PYTHON")}
    return {**env, **extra}


def _summary(out: Path) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in (out / "summary.txt").read_text().splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in gc.STATUSES and parts[0] != "RESULT:":
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


# ------------------------------------------------------------------------------------------ pure parts
def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "task_id": "T_0001",
        "status": "SUCCEEDED",
        "memory_auto": True,
        "right_sized": True,
        "first_mb_per_gpu": 14400,
        "mb_per_gpu": 3795,
        "peak_mb": 3300,
    }
    return {**row, **changes}


def test_right_size_accepts_peak_times_margin_and_names_each_problem() -> None:
    assert gc.right_size_problems(_row(), 1.15) == []
    assert gc.right_size_problems(_row(mb_per_gpu=3300), 1.15) == []  # never below the peak: the peak is fine
    assert gc.right_size_problems(_row(right_sized=False), 1.15) == ["T_0001 has right_sized false"]
    assert gc.right_size_problems(_row(memory_auto=False), 1.15) == ["T_0001 is not memory_auto"]
    (below,) = gc.right_size_problems(_row(mb_per_gpu=3299), 1.15)
    assert "holds 3299 MB" in below
    (above,) = gc.right_size_problems(_row(mb_per_gpu=3796), 1.15)
    assert "holds 3796 MB" in above and "3795" in above
    assert gc.right_size_problems(_row(peak_mb=None), 1.15) == ["T_0001 has no measured peak (None)"]
    assert gc.right_size_problems(_row(first_mb_per_gpu=3000), 1.15) == [
        "T_0001 went up from 3000 to 3795 MB"
    ]


def test_outgrow_wants_the_one_line_with_its_own_numbers() -> None:
    failed = {"task_id": "T_0004", "status": "FAILED", "error": OOM_LINE}
    assert gc.outgrow_problems(failed, 2000) == ([], OOM_LINE)
    problems, _ = gc.outgrow_problems(failed, 1500)
    assert problems == ["the line says 2000 MB, the run had --memory 1500"]
    problems, _ = gc.outgrow_problems({**failed, "task_id": "T_0005"}, 2000)
    assert problems == ["the line names T_0004, not T_0005"]
    low = OOM_LINE.replace("--memory 3300", "--memory 2000")
    problems, _ = gc.outgrow_problems({**failed, "error": low}, 2000)
    assert problems == ["the suggestion 2000 MB is not above the 2000 MB that failed"]
    problems, line = gc.outgrow_problems({**failed, "status": "SUCCEEDED", "error": ""}, 2000)
    assert problems == [
        "T_0004 ended SUCCEEDED, not FAILED",
        "T_0004's error has no 'ran out of its ... MB' line",
    ]
    assert line == "(no error)"


def test_overlap_and_new_gpu_processes() -> None:
    rows = [
        {"running_at": 10.0, "started_at": 9.0, "ended_at": 50.0},
        {"running_at": 20.0, "ended_at": 60.0},
        {"started_at": 25.0, "ended_at": 45.0},
    ]
    assert gc.overlap_s(rows) == 20.0
    assert gc.overlap_s([*rows, {"started_at": 46.0, "ended_at": 70.0}]) == -1.0  # never all at once
    assert gc.overlap_s([{"started_at": 1.0, "ended_at": None}]) is None
    assert gc.new_gpu_processes(["11, python, 500 MiB"], ["11, python, 500 MiB", "42, ray::T, 900 MiB"]) == [
        "42, ray::T, 900 MiB"
    ]


def test_gpu_tests_are_found_by_their_mark(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "sub").mkdir(parents=True)
    (tests / "sub" / "test_a.py").write_text("import pytest\npytestmark = pytest.mark.gpu\n")
    (tests / "test_b.py").write_text("import pytest\n@pytest.mark.gpu\ndef test_x(): pass\n")
    (tests / "test_c.py").write_text("import pytest\n@pytest.mark.gpus_later\ndef test_y(): pass\n")
    (tests / "helper_gpu.py").write_text("pytestmark = pytest.mark.gpu\n")  # not a test file
    assert gc.gpu_test_files(tests) == ["tests/sub/test_a.py", "tests/test_b.py"]
    assert "tests/runtime/test_gpu.py" in gc.gpu_test_files(REPO / "tests")


def test_make_subset_writes_idx_files_the_template_reads(tmp_path: Path, mnist_dir: Path) -> None:
    dest = gc.make_subset(mnist_dir, tmp_path / "small", 100, 30)
    source = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    for name, count, first_image in (("train", 100, 0), ("t10k", 30, 10000 - 30)):
        images = gzip.decompress((dest / f"{name}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((dest / f"{name}-labels-idx1-ubyte.gz").read_bytes())
        assert struct.unpack(">IIII", images[:16]) == (2051, count, 28, 28)
        assert struct.unpack(">II", labels[:8]) == (2049, count)
        assert len(images) == 16 + count * 784 and len(labels) == 8 + count
        assert images[16:800] == source[16 + first_image * 784 : 16 + (first_image + 1) * 784]
    with pytest.raises(ValueError, match="asked for 9990 \\+ 20 images"):
        gc.make_subset(mnist_dir, tmp_path / "big", 9990, 20)


def test_a_failed_install_still_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert gc.main(["--out", str(out), "--install", "FAIL", "--install-note", "no wheels"], steps=[]) == 1
    text = (out / "summary.txt").read_text()
    assert _summary(out) == {"install": ("FAIL", "no wheels")}
    assert text.rstrip().endswith("RESULT: FAIL (0 passed, 1 failed, 0 skipped); failed: install")


def test_a_crashing_step_is_a_failed_check_and_the_rest_still_run(tmp_path: Path) -> None:
    def broken(ctx: object) -> None:
        raise RuntimeError("boom")

    def fine(ctx: object) -> None:
        ctx.report.add("fine", "PASS", "ok")  # type: ignore[attr-defined]

    out = tmp_path / "out"
    assert gc.main(["--out", str(out), "--dry-run"], steps=[broken, fine]) == 1
    assert _summary(out)["broken"] == ("FAIL", "crashed: RuntimeError: boom")
    assert _summary(out)["fine"] == ("PASS", "ok")


# -------------------------------------------------------------------------------------- the shell script
def test_the_script_parses_its_arguments(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    helped = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, env=_env())
    assert helped.returncode == 0 and "usage: bench/gpu_check.sh [--dry-run]" in helped.stdout
    bad = subprocess.run(
        [str(SCRIPT), "--frobnicate"], capture_output=True, text=True, env=_env(OUT=str(tmp_path / "o"))
    )
    assert bad.returncode == 2 and "unknown argument '--frobnicate'" in bad.stderr
    missing = subprocess.run([str(SCRIPT), "--wheels"], capture_output=True, text=True, env=_env())
    assert missing.returncode == 2 and "--wheels needs a folder" in missing.stderr


def test_without_wheels_or_ray_the_install_fails_with_a_summary(tmp_path: Path) -> None:
    """A real (not --dry-run) call on a machine where Ray is missing and no wheels were carried: the
    install check fails, says what to do, and nothing else runs (no download is tried)."""
    no_site = tmp_path / "python"  # this interpreter without site-packages: no Ray (nor torch)
    no_site.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    no_site.chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(SCRIPT), "--wheels", str(wheels)],
        capture_output=True,
        text=True,
        env=_env(OUT=str(out), PYTHON=str(no_site)),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status, detail = _summary(out)["install"]
    assert status == "FAIL" and f"no wheels in {wheels} and no Ray here" in detail
    assert list(_summary(out)) == ["install"]
    assert "RESULT: FAIL" in (out / "summary.txt").read_text()
    assert "install: FAIL" in (out / "install.log").read_text()


# -------------------------------------------------------------------------------------------- dry run
@pytest.mark.ray
@pytest.mark.slow
def test_the_dry_run_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check_out"
    proc = subprocess.run(
        [str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        env=_env(OUT=str(out), PYTHON=sys.executable),
        timeout=540,
    )
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else "(no summary)"
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _summary(out)
    expected = {
        "install": "SKIP",
        "machine": "INFO",
        "gpu_tests": "SKIP",
        "up": "PASS",
        "right_size": "PASS",
        "together": "PASS",
        "outgrow": "PASS",
        "others_finish": "PASS",
        "down": "PASS",
        "nvidia_smi_clean": "SKIP",
        "bench_checkpoint": "PASS",
        "bench_loop_overhead": "PASS",
    }
    assert {name: status for name, (status, _) in rows.items()} == expected, summary
    assert summary.rstrip().endswith("RESULT: PASS (8 passed, 0 failed, 3 skipped)")
    # the numbers of the fake scenario: peak 3000 + 300 MB context, × 1.15; the outgrowing run's line
    assert "T_0001 auto 14400 -> 3795 MB (peak 3300 MB" in rows["right_size"][1]
    assert (
        "ran out of its 2000 MB on gpu0 (peak 2800 MB): resubmit with --memory 3300 or more"
        in rows["outgrow"][1]
    )
    assert "ratio" in rows["bench_checkpoint"][1] and "median ratio" in rows["bench_loop_overhead"][1]

    # what a device machine hands back: at most 8 plain files, no folders
    files = sorted(p.name for p in out.iterdir())
    assert all((out / f).is_file() for f in files) and len(files) <= 8, files
    assert {"summary.txt", "machine.txt", "steps.log", "tasks.jsonl", "bench.log", "logs.tar.gz"} <= set(
        files
    )
    snapshots = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    assert snapshots and all(len(s["rows"]) == 4 for s in snapshots)
    final = {r["task_id"]: r for r in snapshots[-1]["rows"]}
    assert [final[t]["status"] for t in sorted(final)] == ["SUCCEEDED"] * 3 + ["FAILED"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "home/center.json" in names and any(n.startswith("mnist/Saves/") for n in names)
    assert "dlnest-ray down --force" not in proc.stderr
    # nothing of the private head is left (the script kills stragglers, but must not have needed to)
    assert "processes left" not in rows["down"][1]
