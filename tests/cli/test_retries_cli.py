"""Retries in the CLI (issue 14): ``run``/``continue --retries N`` and ``config --retries N`` (bad values
are one line, before any cluster is asked), the attempt in ``tasks``/the shell, and the ``tasks --json``
keys ``attempt``, ``attempts``, ``priority``, ``preempted_by``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dlnest_ray.cli import queue
from dlnest_ray.cli.app import main
from dlnest_ray.cli.shell.panes import status_text
from dlnest_ray.cli.tables import attempt_text, settings_table, tasks_table
from dlnest_ray.records import SettingsInfo
from dlnest_ray.tasks import TaskRecord, TaskStatus

RETRIED = TaskRecord(
    task_id="T_0007",
    package="/p/Saves/pkg",
    submitted_at=100.0,
    status=TaskStatus.RUNNING,
    started_at=110.0,
    phase="running",
    attempt=2,
    attempt_reasons=("node lost",),
)


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.settings = SettingsInfo(delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0)

    def run_train(self, **kw: Any) -> str:
        self.calls.append(("run_train", kw))
        return "T_0007"

    def continue_train(self, package: str, **kw: Any) -> str:
        self.calls.append(("continue_train", kw))
        return "T_0007"

    def task(self, task_id: str) -> TaskRecord:
        return TaskRecord(task_id=task_id, package="/p/Saves/pkg", submitted_at=100.0)

    def change_retries(self, n: int) -> None:
        self.calls.append(("change_retries", n))
        self.settings = SettingsInfo(delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0, retries=n)

    def get_settings(self) -> SettingsInfo:
        return self.settings


def cli(argv: list[Any], client: FakeClient | None, monkeypatch: pytest.MonkeyPatch) -> int:
    def connect(address: Any, create: bool) -> FakeClient:
        assert client is not None, "a bad value must be refused before connecting"
        return client

    monkeypatch.setattr(queue, "connect_client", connect)
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return int(info.value.code or 0)


@pytest.mark.parametrize(("given", "sent"), [([], None), (["--retries", "0"], 0), (["--retries", "5"], 5)])
@pytest.mark.parametrize("command", ["run", "continue"])
def test_run_and_continue_send_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, given: list[str], sent: int | None
) -> None:
    client = FakeClient()
    assert cli([command, tmp_path / "x", *given], client, monkeypatch) == 0
    [(_, kw)] = client.calls
    assert kw["retries"] == sent


@pytest.mark.parametrize(
    ("value", "says"), [("-1", "0 or more"), ("two", "not a number"), ("1.5", "not a number")]
)
@pytest.mark.parametrize("command", ["run", "continue", "config"])
def test_bad_retries_are_one_line_before_connecting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    value: str,
    says: str,
) -> None:
    target = [] if command == "config" else [tmp_path / "x"]
    assert cli([command, *target, f"--retries={value}"], None, monkeypatch) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "retries" in err[0] and says in err[0], err


def test_config_retries_changes_the_default_and_shows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient()
    assert cli(["config", "--retries", "4"], client, monkeypatch) == 0
    assert client.calls == [("change_retries", 4)]
    assert capsys.readouterr().out.strip() == "default retries: 4"
    assert cli(["config", "--json"], client, monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["retries"] == 4
    out = Console(width=200)
    with out.capture() as cap:
        out.print(settings_table(client.settings.to_json(), []))
    assert "default retries" in cap.get() and "4" in cap.get()


def test_a_retried_task_shows_its_attempt_in_tasks_and_the_shell() -> None:
    row = RETRIED.to_row()
    assert attempt_text(row) == "attempt 2/3 (node lost)"
    assert status_text(row) == "RUNNING · attempt 2/3 (node lost)"
    out = Console(width=250)
    with out.capture() as cap:
        out.print(tasks_table([row], title="t"))
    assert "RUNNING · attempt 2/3 (node lost)" in cap.get()
    first = RETRIED.to_row() | {"attempt": 1, "attempt_reasons": []}
    assert attempt_text(first) == "" and status_text(first) == "RUNNING"


def test_tasks_json_rows_gain_the_attempt_and_priority_keys() -> None:
    row = RETRIED.to_row()
    assert {k: row[k] for k in ("attempt", "attempts", "attempt_reasons", "priority", "preempted_by")} == {
        "attempt": 2,
        "attempts": 3,
        "attempt_reasons": ["node lost"],
        "priority": 0,
        "preempted_by": "",
    }
    json.dumps(row)  # plain JSON
