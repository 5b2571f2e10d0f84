"""bench/recovery.py: its options, the pure analysis of the stamps (recovery time, work lost), the summary
and its PASS/MISS lines, and (ray, slow) one quick repeat end to end: a node killed mid-run, the run
retried on the head from its checkpoint, every Ray process gone afterwards. No speed goal is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "recovery.py"
FAST_HEALTH_CHECKS = ("--health-check-period-ms", "500", "--health-check-failure-threshold", "3")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_recovery", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_recovery"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


rb = _load()


def stamps(pid: int, steps: range, t0: float, dt: float = 0.1, per_epoch: int = 10) -> list[dict[str, Any]]:
    return [
        {"pid": pid, "t": t0 + i * dt, "epoch": s // per_epoch, "iter": s % per_epoch, "step": s}
        for i, s in enumerate(steps)
    ]


# -------------------------------------------------------------------------------------------- options
def test_defaults_quick_and_refusals() -> None:
    o = rb.parse([])
    assert (o.repeats, o.epochs, o.steps_per_epoch, o.kill_after, o.loss, o.json) == (
        3,
        6,
        10,
        2.5,
        "kill",
        False,
    )
    assert rb.system_config(o) == {}  # Ray's own health checks unless asked
    q = rb.parse(["--quick", "--repeats", "1", "--json", "--loss", "freeze"])
    assert (q.repeats, q.epochs, q.steps_per_epoch, q.kill_after, q.loss, q.json) == (
        1,
        3,
        6,
        1.5,
        "freeze",
        True,
    )
    t = rb.parse(["--health-check-period-ms", "500", "--health-check-failure-threshold", "3"])
    assert rb.system_config(t) == {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    for bad in (["--repeats", "0"], ["--kill-after", "6"], ["--kill-after", "0.5"], ["--loss", "nuke"]):
        with pytest.raises(SystemExit) as e:
            rb.parse(bad)
        assert e.value.code == 2, bad


# -------------------------------------------------------------------------------------------- analysis
def test_work_lost_is_the_steps_trained_twice_over_the_steps_per_epoch() -> None:
    # attempt 1 (pid 7) began steps 0..24 (half way through epoch 2); the node goes at t=102.45; the
    # retry (pid 9) resumes from the epoch-1 checkpoint at step 20 and steps from t=110
    killed = stamps(7, range(25), t0=100.0)
    retry = stamps(9, range(20, 30), t0=110.0)
    loss = rb.analyse(killed + retry, t_removed=102.45, steps_per_epoch=10)
    assert (loss.steps_begun, loss.killed_epoch, loss.resume_step, loss.resume_epoch) == (25, 2, 20, 2)
    assert loss.lost_steps == 5 and loss.lost_epochs == pytest.approx(0.5)
    assert loss.recovery_s == pytest.approx(7.55) and loss.killed_last_s == pytest.approx(-0.05)
    assert loss.redo_s == pytest.approx(0.4)  # from its step 20 to its step 24


def test_a_rank_that_outlives_the_removal_counts_its_late_steps_and_is_not_the_retry() -> None:
    late = stamps(7, range(25), t0=100.0)  # its last three steps come after the removal at 102.15
    retry = stamps(9, range(20, 30), t0=110.0)
    assert rb.retry_stamp(late + retry, 102.15)["pid"] == 9
    loss = rb.analyse(late + retry, t_removed=102.15, steps_per_epoch=10)
    assert loss.lost_steps == 5 and loss.killed_last_s == pytest.approx(0.25)


def test_analysis_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(ValueError, match="no retried attempt"):
        rb.analyse(stamps(7, range(5), t0=100.0), t_removed=100.25, steps_per_epoch=10)
    with pytest.raises(ValueError, match="no step was stamped before"):
        rb.analyse(stamps(9, range(5), t0=100.0), t_removed=99.0, steps_per_epoch=10)
    two = stamps(7, range(3), t0=100.0) + stamps(8, range(3), t0=100.05)
    with pytest.raises(ValueError, match="2 processes stamped"):
        rb.analyse(two, t_removed=101.0, steps_per_epoch=10)


def test_stamp_files_skip_a_half_written_line_and_tell_model_inits(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    assert rb.read_stamps(f) == []
    lines = [{"pid": 3, "t": 1.0, "init": True}, *stamps(3, range(2), t0=2.0)]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"pid": 3, "t": 2.')
    assert [s["step"] for s in rb.read_stamps(f)] == [0, 1]
    assert rb.model_init_at(f, 3) == 1.0 and rb.model_init_at(f, 4) is None


def test_descendants_finds_a_child_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = rb.descendants([os.getpid()])
        assert found[0] == os.getpid() and child.pid in found
    finally:
        child.kill()
        child.wait()


# -------------------------------------------------------------------------------------------- summary
def _repeat(fresh: float, recovery: float, lost_steps: int) -> Any:
    loss = rb.Loss(
        recovery_s=recovery,
        killed_last_s=-0.01,
        steps_begun=25,
        killed_epoch=2,
        resume_step=25 - lost_steps,
        resume_epoch=2,
        lost_steps=lost_steps,
        lost_epochs=lost_steps / 10,
        redo_s=0.5,
    )
    return rb.Repeat(
        fresh_s=fresh,
        fresh_init_s=fresh - 1.0,
        loss=loss,
        attempts=2,
        reasons=["node lost"],
        node_dead_s=1.3,
        retry_decided_s=1.3,
        relaunched_s=3.3,
        running_s=3.8,
        model_init_s=recovery - 1.2,
        remove_call_s=0.1,
    )


def test_summary_takes_medians_and_says_pass_or_miss_per_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in rb.health_env():
        monkeypatch.delenv(key)
    opts = rb.parse(["--repeats", "3"])
    reps = [_repeat(4.0, 7.0, 5), _repeat(5.0, 12.0, 5), _repeat(4.5, 9.9, 12)]
    s = rb.summarize(reps, opts)
    assert s["median"]["ratio"] == pytest.approx(2.2)  # of 1.75, 2.4, 2.2
    assert s["median"]["recovery_s"] == pytest.approx(9.9) and s["median"]["lost_epochs"] == 0.5
    assert s["median"]["relaunched_s"] == pytest.approx(3.3)
    assert s["goals"]["ratio"]["pass"] is False and s["goals"]["lost_epochs"]["pass"] is True
    lines = rb.summary_lines(s)
    assert lines[1].endswith("= 2.200 (goal <= 2.0) MISS") and lines[2].endswith(
        "= 0.50 epochs (goal <= 1.0) PASS"
    )
    assert "node lost by SIGKILL, health checks: Ray's defaults" in lines[0]
    assert json.loads(json.dumps(s)) == s  # JSON-ready as it is
    assert "ratio  1.75" in rb.repeat_line(0, reps[0]) and "attempt 2 after node lost" in rb.repeat_line(
        0, reps[0]
    )


# -------------------------------------------------------------------------------------------- end to end
def _ray_processes(marker: str) -> list[str]:
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmd.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text:
            out.append(f"{cmd.parent.name}: {text[:200]}")
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_one_quick_repeat_retries_the_killed_run_and_leaves_no_process() -> None:
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DLNEST_RAY_FAKE_GPUS")}
        env["RAY_TMPDIR"] = ray_tmp
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--json", *FAST_HEALTH_CHECKS],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads(proc.stdout)  # stdout holds the one JSON object, Ray's messages go to stderr
        (rep,) = summary["repeats"]
        assert (rep["attempts"], rep["reasons"]) == (2, ["node lost"])
        loss = rep["loss"]
        # killed at 1.5 epochs of 6 steps: 9 steps begun, resumed from the epoch-0 checkpoint (step 6)
        assert loss["resume_step"] == 6 and loss["resume_epoch"] == 1 and loss["killed_epoch"] == 1
        assert 0.5 <= loss["lost_epochs"] <= 1.0 and loss["killed_last_s"] <= 0.5
        assert 0 < rep["node_dead_s"] <= rep["retry_decided_s"] + 0.5
        assert rep["retry_decided_s"] <= rep["relaunched_s"] <= rep["running_s"] <= loss["recovery_s"]
        assert (
            rep["fresh_s"] > 0 and summary["settings"]["ray_system_config"]["health_check_period_ms"] == 500
        )
        assert set(summary["goals"]) == {"ratio", "lost_epochs"}
        assert _ray_processes(ray_tmp) == []  # the cluster, its nodes and their workers are gone
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
