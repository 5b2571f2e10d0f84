"""Priorities in the CLI (issue 14 item 2): ``run``/``continue --priority P --no-preempt`` and
``analyze --priority P`` (a bad value is one line, before any cluster is asked), and a preempted task or
one of another priority in ``tasks`` and the shell. In process with a fake client: no Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dlnest_ray.cli import analysis, queue
from dlnest_ray.cli.app import main
from dlnest_ray.cli.shell.panes import status_text
from dlnest_ray.cli.tables import tasks_table
from dlnest_ray.tasks import TaskRecord, TaskStatus


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def run_train(self, **kw: Any) -> str:
        self.calls.append(("run_train", kw))
        return "T_0007"

    def continue_train(self, package: str, **kw: Any) -> str:
        self.calls.append(("continue_train", kw))
        return "T_0007"

    def task(self, task_id: str) -> TaskRecord:
        return TaskRecord(task_id=task_id, package="/p/Saves/pkg", submitted_at=100.0)


def cli(argv: list[Any], client: FakeClient | None, monkeypatch: pytest.MonkeyPatch) -> int:
    def connect(address: Any, create: bool) -> FakeClient:
        assert client is not None, "a bad value must be refused before connecting"
        return client

    monkeypatch.setattr(queue, "connect_client", connect)
    monkeypatch.setattr(analysis, "connect_client", connect)
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return int(info.value.code or 0)


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def record(task_id: str = "T_0001", **changes: Any) -> TaskRecord:
    base: dict[str, Any] = {"task_id": task_id, "package": f"/p/Saves/{task_id}_pkg", "submitted_at": 100.0}
    return TaskRecord(**(base | changes))


def table_text(*records: TaskRecord) -> str:
    out = Console(width=300)
    with out.capture() as cap:
        out.print(tasks_table([r.to_row() for r in records], title="t"))
    return cap.get()


# --------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("given", "priority", "no_preempt"),
    [
        ([], 0, False),
        (["--priority", "5"], 5, False),
        (["--priority=-3"], -3, False),
        (["--no-preempt"], 0, True),
        (["--priority", "2", "--no-preempt"], 2, True),
    ],
)
@pytest.mark.parametrize("command", ["run", "continue"])
def test_run_and_continue_send_priority_and_no_preempt(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    given: list[str],
    priority: int,
    no_preempt: bool,
) -> None:
    client = FakeClient()
    assert cli([command, tmp_path / "x", *given], client, monkeypatch) == 0
    [(name, kw)] = client.calls
    assert name == ("run_train" if command == "run" else "continue_train")
    assert (kw["priority"], kw["no_preempt"]) == (priority, no_preempt)


@pytest.mark.parametrize(
    ("command", "value"), [("run", "x"), ("continue", "1.5"), ("run", "1e3"), ("continue", "high")]
)
def test_a_bad_priority_is_one_line_before_connecting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    value: str,
) -> None:
    assert cli([command, tmp_path / "x", "--priority", value], None, monkeypatch) == 1
    err = error_lines(capsys)
    assert len(err) == 1 and "--priority" in err[0] and repr(value) in err[0], err


def test_analyze_refuses_a_bad_priority_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["analyze", tmp_path / "pkg", "--priority", "two"], None, monkeypatch) == 1
    err = error_lines(capsys)
    assert len(err) == 1 and "--priority" in err[0], err


def test_analyze_script_refuses_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "s.py"
    script.write_text("def experience(self):\n    return 1\n")
    assert cli(["analyze", tmp_path / "pkg", "--script", script, "--priority", "3"], None, monkeypatch) == 1
    err = error_lines(capsys)
    assert len(err) == 1 and "--priority" in err[0] and "--script" in err[0], err


@pytest.mark.parametrize("command", ["run", "continue"])
def test_help_lists_priority_and_no_preempt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli([command, "--help"], None, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "--priority" in out and "--no-preempt" in out


def test_analyze_help_lists_priority(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli(["analyze", "--help"], None, monkeypatch) == 0
    assert "--priority" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the tables
def test_a_preempted_pending_task_says_by_what_and_its_priority() -> None:
    waiting = record(
        "T_0001",
        status=TaskStatus.PENDING,
        preempted_by="T_0002",
        preemptions=1,
        priority=5,
        wait_reason="preempted by T_0002; needs 16000 MB on 1 GPU",
    )
    text = table_text(waiting)
    assert "PENDING (preempted by T_0002)" in text
    assert "priority 5" in text
    assert "preempted by T_0002; needs 16000 MB on 1 GPU" in text
    assert status_text(waiting.to_row()) == "PENDING (preempted by T_0002)"


def test_a_stopping_preempted_task_says_so() -> None:
    stopping = record(
        "T_0001",
        status=TaskStatus.PREEMPTED,
        started_at=110.0,
        node="n1",
        gpus=(0,),
        phase="running",
        preempted_by="T_0002",
        preemptions=1,
    )
    text = table_text(stopping)
    assert "PREEMPTED (preempted by T_0002)" in text
    assert "stopping at the end of its epoch" in text
    assert status_text(stopping.to_row()) == "PREEMPTED (preempted by T_0002)"


def test_plain_rows_show_no_priority_and_no_preemption() -> None:
    plain = record("T_0003", status=TaskStatus.PENDING, wait_reason="needs 16000 MB on 1 GPU")
    # a relaunched run: its last preemption is history (the center clears it at launch; a stale value
    # on a running row is not shown either)
    running = record(
        "T_0004", status=TaskStatus.RUNNING, started_at=110.0, phase="running", preempted_by="T_0009"
    )
    negative = record("T_0005", status=TaskStatus.PENDING, priority=-2)
    text = table_text(plain, running, negative)
    assert "preempted by" not in text
    assert "priority 0" not in text and "priority -2" in text
    assert status_text(running.to_row()) == "RUNNING"
    assert status_text(plain.to_row()) == "PENDING"
