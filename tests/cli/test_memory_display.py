"""Memory in the CLI (issue 13): ``--memory MB|auto`` and its bad values, ``config --margin``, the
``memory:`` line after ``run``/``continue``, and reserved → measured in ``tasks``, ``devices`` and the
shell (one function, :func:`memory_text`). In process with a fake client, or as a child process where
nothing answers: no Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.cli import queue
from dlnest_ray.cli.app import main
from dlnest_ray.cli.options import parse_memory
from dlnest_ray.cli.shell.panes import devices_fragments, tasks_fragments
from dlnest_ray.cli.tables import (
    device_tasks_text,
    devices_table,
    memory_line,
    memory_text,
    settings_table,
    task_memory_by_id,
    tasks_table,
    with_latest_metrics,
)
from dlnest_ray.errors import DlnestError
from dlnest_ray.records import DeviceInfo, SettingsInfo
from dlnest_ray.tasks import Placement, TaskRecord, TaskStatus
from tests.cli.helpers import run_cli, single_error_line

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1: a command that gets as far as connecting says so


def record(task_id: str = "T_0001", **changes: Any) -> TaskRecord:
    base: dict[str, Any] = {"task_id": task_id, "package": f"/p/Saves/{task_id}_pkg", "submitted_at": 100.0}
    return TaskRecord(**(base | changes))


RUNNING = {"status": TaskStatus.RUNNING, "started_at": 110.0, "node": "n1", "gpus": (0,)}


# ------------------------------------------------------------------------------------------ memory_text
@pytest.mark.parametrize(
    ("changes", "text"),
    [
        # given (--memory): reservation, then reservation → measured peak
        ({"memory_mb": 6000}, "6000 MB"),
        ({"memory_mb": 6000, **RUNNING, "mb_per_gpu": 6000, "first_mb_per_gpu": 6000}, "6000 MB"),
        ({"memory_mb": 6000, **RUNNING, "mb_per_gpu": 6000, "peak_mb": 4210}, "6000 → 4210 MB"),
        # auto: what it starts with, then at launch → right-sized
        ({"memory_auto": True, "memory_mb": 14400}, "auto 14400 MB"),
        ({"memory_auto": True, "memory_source": "90% of a GPU (nothing to learn from yet)"}, "auto 90%"),
        ({"memory_auto": True, **RUNNING, "mb_per_gpu": 14400, "first_mb_per_gpu": 14400}, "auto 14400 MB"),
        (
            {
                "memory_auto": True,
                **RUNNING,
                "mb_per_gpu": 4800,
                "first_mb_per_gpu": 14400,
                "peak_mb": 4170,
                "right_sized": True,
            },
            "auto 14400 → 4800 MB",
        ),
        # a record from before issue 13: no request is DLNest's 90% default; a placed one its reservation
        ({}, "auto 90%"),
        ({**RUNNING, "mb_per_gpu": 9000}, "9000 MB"),
        # CPU tasks hold no GPU memory
        ({"placement": Placement.CPU, "status": TaskStatus.RUNNING, "started_at": 110.0}, "-"),
    ],
)
def test_memory_text(changes: dict[str, Any], text: str) -> None:
    rec = record(**changes)
    assert memory_text(rec) == text
    assert memory_text(rec.to_row()) == text  # a record and its row (what tables get) read the same


def test_memory_text_never_raises_on_odd_rows() -> None:
    assert memory_text({}) == "auto 90%"
    assert memory_text({"mb_per_gpu": None, "memory_mb": "x", "peak_mb": float("nan")}) == "auto 90%"
    assert memory_text({"mb_per_gpu": 5000, "peak_mb": float("nan")}) == "5000 MB"


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {
                "memory_auto": True,
                "memory_mb": 4800,
                "memory_source": "learned from 3 earlier runs (peak 4170 MB)",
            },
            "memory: 4800 MB, learned from 3 earlier runs (peak 4170 MB)",
        ),
        (
            {"memory_auto": True, "memory_source": "90% of a GPU (nothing to learn from yet)"},
            "memory: 90% of a GPU (nothing to learn from yet)",
        ),
        ({"memory_mb": 6000, "memory_source": "given (--memory)"}, "memory: 6000 MB, given (--memory)"),
        (  # placed at once: the reservation it got
            {
                "memory_auto": True,
                **RUNNING,
                "mb_per_gpu": 14400,
                "memory_source": "its package's peak (4170 MB)",
            },
            "memory: 14400 MB, its package's peak (4170 MB)",
        ),
        ({"memory_mb": 6000}, ""),  # a center that does not say where the number came from: no line
        ({"placement": Placement.CPU, "memory_source": "given (--memory)"}, ""),
    ],
)
def test_memory_line(changes: dict[str, Any], line: str) -> None:
    assert memory_line(record(**changes)) == line


# ------------------------------------------------------------------------------------------ tables
def render(table: Any) -> str:
    from rich.console import Console

    out = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - only recorded
    out.print(table)
    return out.export_text()


def test_tasks_table_shows_reserved_and_measured() -> None:
    rows = [
        record("T_0001", memory_mb=6000, **RUNNING, mb_per_gpu=6000, peak_mb=4210).to_row(),
        record(
            "T_0002", memory_auto=True, **RUNNING, mb_per_gpu=4800, first_mb_per_gpu=14400, right_sized=True
        ).to_row(),
        record("T_0003", memory_auto=True, memory_mb=14400).to_row(),
    ]
    text = render(tasks_table(rows, title="Tasks"))
    assert "memory/GPU" in text
    lines = {line.split()[1]: line for line in text.splitlines() if "T_000" in line}
    assert "6000 → 4210 MB" in lines["T_0001"]
    assert "auto 14400 → 4800 MB" in lines["T_0002"]
    assert "auto 14400 MB" in lines["T_0003"]


def test_tasks_json_rows_carry_the_memory_fields() -> None:
    rec = record(
        memory_auto=True,
        memory_source="learned from 3 earlier runs (peak 4170 MB)",
        fingerprint="abc123",
        **RUNNING,
        mb_per_gpu=4800,
        first_mb_per_gpu=14400,
        peak_mb=4170,
        right_sized=True,
    )
    [row] = with_latest_metrics([rec.to_row()])  # what `tasks --json` prints
    back = json.loads(json.dumps(row))
    assert {k: back[k] for k in ("memory_auto", "memory_source", "fingerprint")} == {
        "memory_auto": True,
        "memory_source": "learned from 3 earlier runs (peak 4170 MB)",
        "fingerprint": "abc123",
    }
    assert (back["mb_per_gpu"], back["first_mb_per_gpu"], back["peak_mb"], back["right_sized"]) == (
        4800,
        14400,
        4170,
        True,
    )
    assert back["memory_mb"] is None and back["latest_metrics"] is None


def devices_and_tasks() -> tuple[list[dict[str, Any]], list[TaskRecord]]:
    devices = [
        DeviceInfo(
            node="n1", gpu=0, total_mb=16000, free_mb=4000, reserved_mb=10800, tasks=("T_0003", "T_0005")
        ).to_json(),
        DeviceInfo(node="n1", gpu=1, total_mb=16000, free_mb=16000, reserved_mb=0).to_json(),
    ]
    tasks = [
        record("T_0003", memory_mb=6000, **RUNNING, mb_per_gpu=6000, peak_mb=4210),
        record(
            "T_0005", memory_auto=True, **RUNNING, mb_per_gpu=4800, first_mb_per_gpu=14400, right_sized=True
        ),
    ]
    return devices, tasks


def test_devices_table_lists_each_task_with_its_memory() -> None:
    devices, tasks = devices_and_tasks()
    text = render(devices_table(devices, tasks))
    gpu0 = next(line for line in text.splitlines() if "n1:gpu0" in line)
    assert "T_0003 6000 → 4210 MB, T_0005 auto 14400 → 4800 MB" in gpu0
    gpu1 = next(line for line in text.splitlines() if "n1:gpu1" in line)
    assert "T_00" not in gpu1
    # without the task rows (or a task the list lacks) the ids alone
    assert "T_0003, T_0005" in render(devices_table(devices))
    assert device_tasks_text(devices[0], task_memory_by_id(tasks[:1])) == "T_0003 6000 → 4210 MB, T_0005"
    assert device_tasks_text(devices[1], {}) == "-"


def test_shell_panes_use_the_same_memory_text() -> None:
    devices, tasks = devices_and_tasks()
    rows = [t.to_row() for t in tasks]
    pane = "".join(text for _, text in tasks_fragments(rows, 160, now=130.0))
    assert "memory" in pane.splitlines()[0]
    assert "6000 → 4210 MB" in pane and "auto 14400 → 4800 MB" in pane
    assert all(len(line) <= 160 for line in pane.splitlines())
    gpus = "".join(text for _, text in devices_fragments(devices, 120, tasks=rows))
    assert "T_0003 6000 → 4210 MB, T_0005 auto 14400 → 4800 MB" in gpus


def test_settings_table_shows_the_margin() -> None:
    settings = SettingsInfo(delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0, margin=1.3).to_json()
    assert settings["margin"] == 1.3  # `config --json`
    text = render(settings_table(settings, []))
    assert "memory margin" in text and "1.3" in text


# ------------------------------------------------------------------------------------------ --memory
@pytest.mark.parametrize(
    ("value", "mb"), [(None, None), ("auto", None), ("AUTO", None), ("6000", 6000), (1, 1)]
)
def test_parse_memory_accepts_mb_and_auto(value: Any, mb: int | None) -> None:
    assert parse_memory(value) == mb


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "positive number of MB"),
        ("-5", "positive number of MB"),
        ("abc", "'abc' is not a number of MB"),
        ("4.5", "'4.5' is not a number of MB"),
        ("", "is not a number of MB"),
    ],
)
def test_parse_memory_refuses_with_one_line(value: str, says: str) -> None:
    with pytest.raises(DlnestError) as info:
        parse_memory(value)
    assert says in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "says"), [("0", "positive"), ("-100", "positive"), ("lots", "not a number")]
)
@pytest.mark.parametrize("command", ["run", "continue"])
def test_bad_memory_is_one_error_line_before_any_cluster(
    tmp_path: Path, command: str, value: str, says: str
) -> None:
    target = tmp_path / ("root_config.json" if command == "run" else "package")
    result = run_cli(command, target, "--memory", value, env={"RAY_ADDRESS": NOWHERE}, timeout=120)
    line = single_error_line(result)
    assert "--memory" in line and says in line, line  # refused here: not "no Ray cluster"


def test_memory_help_explains_auto_and_the_cap() -> None:
    result = run_cli("run", "--help", timeout=120)
    assert result.returncode == 0, str(result)
    text = " ".join(result.stdout.replace("│", " ").split())  # rich's help box, unwrapped
    for words in ("MB|auto", "auto", "earlier runs", "margin", "90%", "first epoch", "cap"):
        assert words in text, words


# ------------------------------------------------------------------------------------------ in process
class FakeClient:
    """What the queue commands call on a client, recorded."""

    def __init__(self, submitted: TaskRecord | None = None) -> None:
        self.submitted = submitted
        self.calls: list[tuple[str, Any]] = []
        self.settings = SettingsInfo(delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0)

    def run_train(self, **kw: Any) -> str:
        self.calls.append(("run_train", kw))
        assert self.submitted is not None
        return self.submitted.task_id

    def continue_train(self, package: str, **kw: Any) -> str:
        self.calls.append(("continue_train", {"package": package, **kw}))
        assert self.submitted is not None
        return self.submitted.task_id

    def task(self, task_id: str) -> TaskRecord:
        assert self.submitted is not None and task_id == self.submitted.task_id
        return self.submitted

    def change_margin(self, margin: float) -> None:
        self.calls.append(("change_margin", margin))
        self.settings = SettingsInfo(delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0, margin=margin)

    def get_settings(self) -> SettingsInfo:
        return self.settings

    def get_devices_info(self) -> list[DeviceInfo]:
        return devices_and_tasks_infos()[0]

    def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
        return devices_and_tasks_infos()[1]


def devices_and_tasks_infos() -> tuple[list[DeviceInfo], list[TaskRecord]]:
    devices, tasks = devices_and_tasks()
    return [DeviceInfo(**{**d, "tasks": tuple(d["tasks"])}) for d in devices], tasks


def cli(argv: list[str], client: FakeClient, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(queue, "connect_client", lambda address, create: client)
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return int(info.value.code or 0)


LEARNED = record(
    "T_0007",
    memory_auto=True,
    memory_mb=4800,
    memory_source="learned from 3 earlier runs (peak 4170 MB)",
    wait_reason="needs 4800 MB on 1 GPU",
)


@pytest.mark.parametrize(
    ("memory", "sent"), [([], None), (["--memory", "auto"], None), (["-m", "6000"], 6000)]
)
def test_run_sends_memory_and_says_where_it_came_from(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    memory: list[str],
    sent: Any,
) -> None:
    client = FakeClient(LEARNED)
    assert cli(["run", tmp_path / "root_config.json", *memory], client, monkeypatch) == 0
    [(name, kw)] = client.calls
    assert name == "run_train" and kw["memory_mb"] == sent
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "task: T_0007 (PENDING)",
        "package: /p/Saves/T_0007_pkg",
        "memory: 4800 MB, learned from 3 earlier runs (peak 4170 MB)",
        "waiting: needs 4800 MB on 1 GPU",
    ]


def test_continue_json_adds_the_memory_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient(LEARNED)
    assert cli(["continue", tmp_path / "pkg", "--json"], client, monkeypatch) == 0
    assert client.calls[0][0] == "continue_train" and client.calls[0][1]["memory_mb"] is None
    out = json.loads(capsys.readouterr().out)
    assert out == {  # the keys it always had, and the memory ones added
        "task_id": "T_0007",
        "package": "/p/Saves/T_0007_pkg",
        "status": "PENDING",
        "memory_mb": 4800,
        "mb_per_gpu": 0,
        "memory_auto": True,
        "memory_source": "learned from 3 earlier runs (peak 4170 MB)",
    }


def test_run_prints_no_memory_line_when_the_center_does_not_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient(record("T_0002", memory_mb=6000))
    assert cli(["run", tmp_path / "root_config.json", "-m", "6000"], client, monkeypatch) == 0
    assert not any(line.startswith("memory") for line in capsys.readouterr().out.splitlines())


def test_config_margin_changes_and_shows_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient()
    assert cli(["config", "--margin", "1.3"], client, monkeypatch) == 0
    assert client.calls == [("change_margin", 1.3)]
    assert capsys.readouterr().out.strip() == "memory margin: 1.3"
    assert cli(["config", "--json"], client, monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["margin"] == 1.3
    assert cli(["config"], client, monkeypatch) == 0
    assert "memory margin" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0.9", "0", "-1", "nan"])
def test_config_margin_below_one_is_one_line_and_changes_nothing(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient()
    assert cli(["config", "--margin", value], client, monkeypatch) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --margin must be 1 or more"), err
    assert client.calls == []


def test_devices_command_lists_tasks_with_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["devices"], FakeClient(), monkeypatch) == 0
    out = capsys.readouterr().out
    assert "T_0003 6000 → 4210 MB" in out and "T_0005 auto 14400 → 4800 MB" in out
    assert cli(["devices", "--json"], FakeClient(), monkeypatch) == 0
    rows = json.loads(capsys.readouterr().out)  # unchanged: the DeviceInfo rows
    assert rows[0]["tasks"] == ["T_0003", "T_0005"] and set(rows[0]) == set(DeviceInfo.__dataclass_fields__)
