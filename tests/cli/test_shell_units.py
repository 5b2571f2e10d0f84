"""The shell's pure parts: pane formatting and layout choice, command planning, completion candidates,
in-process CLI capture, and the polling pass (with a fake client). No terminal, no cluster."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from dlnest_ray.cli.shell.commands import (
    CliCall,
    CliRunner,
    Exp,
    Refuse,
    RoutedStream,
    ShellVerb,
    Watch,
    plan,
)
from dlnest_ray.cli.shell.completion import CompletionContext, candidates, path_candidates, specs_from_click
from dlnest_ray.cli.shell.panes import (
    CURSOR,
    LineLog,
    ansi_fragments,
    choose_layout,
    devices_fragments,
    log_fragments,
    status_text,
    tasks_fragments,
    visible_tasks,
)
from dlnest_ray.cli.shell.state import ShellState, poll_once
from dlnest_ray.errors import DlnestError
from dlnest_ray.records import DeviceInfo
from dlnest_ray.tasks import TaskRecord


def text_of(fragments: list[tuple[str, str]]) -> str:
    return "".join(t for s, t in fragments if s != "[SetCursorPosition]")


def task(task_id: str, status: str, **kw: Any) -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "package": f"/p/Saves/{task_id}_pkg", **kw}


# ---------------------------------------------------------------------------------------------- panes
def test_layout_is_wide_from_120_columns() -> None:
    assert choose_layout(119) == "narrow"
    assert choose_layout(120) == "wide"
    assert choose_layout(300) == "wide"


def test_log_pane_follows_the_end_and_splits_embedded_newlines() -> None:
    log = LineLog(limit=3)
    log.add("one")
    log.add("two\nthree")  # one add, two lines: never one lexer line drawn as two (DLNest's bug)
    log.add("four")
    assert [text_of(line) for line in log.lines] == ["two", "three", "four"]
    out = log_fragments(log.lines)
    assert out[-1] == CURSOR
    assert text_of(out) == "two\nthree\nfour"
    assert text_of(log_fragments([], empty="nothing")) == "nothing"


def test_a_scrolled_back_pane_ends_at_an_earlier_line_at_once() -> None:
    """PageUp must move the pane on the frame it is pressed: the pane's text ends `back` lines before
    the end (with the cursor there), instead of a cursor moved up inside a pane that already shows it."""
    lines = [[("", f"l{i}")] for i in range(10)]
    out = log_fragments(lines, back=3, tail=4)
    assert text_of(out) == "l3\nl4\nl5\nl6" and out[-1] == CURSOR
    assert text_of(log_fragments(lines, back=99)) == "l0"  # clamped: the first line stays
    assert text_of(log_fragments(lines, back=0)) == "\n".join(f"l{i}" for i in range(10))


def test_help_is_shown_from_its_top() -> None:
    from dlnest_ray.cli.shell.panes import top_fragments

    out = top_fragments(["a", "b", "c"], first=1)
    assert out[0] == CURSOR and text_of(out) == "b\nc"
    assert text_of(top_fragments(["a"], first=5)) == "a"


def test_ansi_output_becomes_styled_lines() -> None:
    lines = ansi_fragments("\x1b[31merror: bad\x1b[0m\nplain\n")
    assert lines == [[("ansired", "error: bad")], [("", "plain")]]


def test_task_table_fits_the_width_and_shows_phase_reason_and_error() -> None:
    rows = [
        task("T_0001", "RUNNING", node="n1", gpus=[0], mb_per_gpu=6000, started_at=100.0, description="d"),
        task("A_0002", "RUNNING", phase="loading", placement="cpu", started_at=100.0),
        task("T_0003", "PENDING", memory_mb=6000, wait_reason="needs 6000 MB on 1 GPU; best free is 0"),
        task("T_0004", "FAILED", error="boom\nsecond line", ended_at=150.0, started_at=120.0),
    ]
    for width in (60, 100, 158):
        text = text_of(tasks_fragments(rows, width, now=130.0))
        lines = text.split("\n")
        assert len(lines) == 5  # header + 4 rows: a multi-line error stays on its row
        assert all(len(line) <= width for line in lines), (width, lines)
    wide = text_of(tasks_fragments(rows, 158, now=130.0)).split("\n")
    assert (
        wide[1].startswith("T_0001  RUNNING")
        and "n1:gpu0" in wide[1]
        and "6000" in wide[1]
        and "30s" in wide[1]
    )
    assert "RUNNING (loading)" in wide[2] and "CPU" in wide[2]
    assert "needs 6000 MB on 1 GPU" in wide[3]
    assert wide[3].index("6000 MB") < wide[3].index("needs")  # the memory column: what it asks for
    assert "boom second line" in wide[4]
    styles = dict((t.strip(), s) for s, t in tasks_fragments(rows, 158, now=130.0) if t.strip())
    assert styles["FAILED"] == "fg:ansired" and styles["PENDING"] == "fg:ansiyellow"


def test_task_table_keeps_active_tasks_and_the_last_finished_ones() -> None:
    rows = [task(f"T_{i:04d}", "SUCCEEDED", ended_at=float(i)) for i in range(1, 9)]
    rows.insert(0, task("T_0000", "PENDING"))
    assert [t["task_id"] for t in visible_tasks(rows)] == ["T_0000", *[f"T_{i:04d}" for i in range(4, 9)]]
    assert status_text({"status": "RUNNING", "cancelling": True}) == "RUNNING (stopping)"
    assert status_text({"status": "RUNNING", "phase": "running"}) == "RUNNING"


def test_devices_pane() -> None:
    devices = [
        {"node": "n1", "gpu": 0, "total_mb": 16000, "free_mb": 4000, "reserved_mb": 12000, "tasks": ["T_1"]},
        {"node": "n1", "gpu": 1, "total_mb": 16000, "free_mb": 16000, "reserved_mb": 0, "enabled": False},
    ]
    frags = devices_fragments(devices, 50)
    lines = text_of(frags).split("\n")
    assert lines[1].startswith("    n1:gpu0")
    assert "4000/16000" in lines[1] and "12000" in lines[1] and "T_1" in lines[1]
    assert lines[2].startswith("off n1:gpu1")
    assert ("fg:ansired", lines[2]) in frags
    assert all(len(line) <= 50 for line in lines)
    assert "no GPUs" in text_of(devices_fragments([], 50))


# ---------------------------------------------------------------------------------------------- plan
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", ShellVerb(name="noop")),
        ("exit", ShellVerb(name="exit")),
        ("withdraw", ShellVerb(name="withdraw")),
        ("watch A_0003", Watch(task_id="A_0003")),
        ("watch T_0001", Watch(task_id="T_0001")),
        ("exp getAcc", Exp(task_id=None, script="getAcc")),
        ("exp A_0003 getAcc --timeout 5", Exp(task_id="A_0003", script="getAcc", timeout_s=5.0)),
        ("exp -t 2.5 getAcc", Exp(task_id=None, script="getAcc", timeout_s=2.5)),
        (
            'run "my proj/root_config.json" -m 6000',
            CliCall(args=["run", "my proj/root_config.json", "-m", "6000"]),
        ),
        ("del T_0001 T_0002", CliCall(args=["del", "T_0001", "T_0002"])),
        ("config --devices gpu0", CliCall(args=["config", "--devices", "gpu0"])),
        ("analyze Saves/x --cpu", CliCall(args=["analyze", "Saves/x", "--cpu"])),
    ],
)
def test_plan(line: str, expected: object) -> None:
    assert plan(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "down",
        "up",
        "train c.json",
        "log -F",
        "analyze P --script s",
        "watch",
        "watch 3",
        "exp A_0001",
        "exp a b c",
        "exp s --json",
        "exp s -t x",
        "frobnicate",
        'run "unclosed',
        "clear now",
    ],
)
def test_plan_refuses_with_a_reason(line: str) -> None:
    action = plan(line)
    assert isinstance(action, Refuse) and action.message


# ---------------------------------------------------------------------------------------------- capture
def test_cli_runner_captures_output_and_errors_per_thread() -> None:
    app = typer.Typer()

    @app.command("hello")
    def hello(name: str) -> None:
        typer.echo(f"hello {name}")
        typer.secho("careful", fg=typer.colors.RED, err=True)

    @app.command("fail")
    def fail() -> None:
        raise DlnestError("no such package")

    fallback = io.StringIO()
    out, err = RoutedStream(fallback), RoutedStream(fallback)
    runner = CliRunner(command=typer.main.get_command(app), stdout=out, stderr=err)
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        ok = runner.run(["hello", "ray"])
        bad = runner.run(["fail"])
        usage = runner.run(["hello"])
        print("not captured")  # another caller: the fallback (the shell log), never a pane
    finally:
        sys.stdout, sys.stderr = old
    assert ok.exit_code == 0 and "hello ray" in ok.output and "\x1b[31mcareful" in ok.output
    assert (bad.exit_code, bad.error) == (1, "error: no such package")
    assert usage.exit_code == 2 and "Missing argument" in usage.output
    assert fallback.getvalue() == "not captured\n"


# ---------------------------------------------------------------------------------------------- completion
@pytest.fixture(scope="module")
def specs() -> dict[str, Any]:
    from dlnest_ray.cli.app import app

    return specs_from_click(typer.main.get_command(app))


def test_completes_verbs_flags_ids_and_scripts(specs: dict[str, Any], tmp_path: Path) -> None:
    asked: list[str] = []

    def scripts_for(task_id: str) -> list[str]:
        asked.append(task_id)
        return ["getAcc", "showModel"]

    ctx = CompletionContext(
        specs=specs,
        task_ids=["T_0001", "A_0002"],
        watched="A_0002",
        scripts_for=scripts_for,
        cwd=tmp_path,
    )
    assert candidates("ru", ctx) == ("ru", ["run"])
    assert "withdraw" in candidates("w", ctx)[1] and "watch" in candidates("w", ctx)[1]
    word, flags = candidates("run c.json --m", ctx)
    assert word == "--m" and set(flags) == {"--memory", "--multi-gpu"}
    assert "--address" not in candidates("run c.json --", ctx)[1]
    assert candidates("del T_0001 ", ctx) == ("", ["T_0001", "A_0002"])
    assert candidates("watch A", ctx) == ("A", ["A_0002"])
    assert candidates("exp ", ctx) == ("", ["A_0002", "getAcc", "showModel"])
    assert candidates("exp A_0002 sh", ctx) == ("sh", ["showModel"])
    assert asked == ["A_0002", "A_0002"]
    assert candidates("run c.json -m ", ctx) == ("", [])  # a value, not a path


def test_completes_paths(specs: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "root_config.json").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    ctx = CompletionContext(specs=specs, cwd=tmp_path)
    assert candidates("run pr", ctx) == ("pr", ["proj/"])
    assert candidates("run proj/r", ctx) == ("proj/r", ["proj/root_config.json"])
    assert candidates("run proj/root_config.json --freq proj/", ctx)[1] == ["proj/root_config.json"]
    assert path_candidates("", tmp_path) == ["proj/"]  # dot files only when asked for
    assert path_candidates(".h", tmp_path) == [".hidden/"]
    assert path_candidates(f"{tmp_path}/pr", Path("/")) == [f"{tmp_path}/proj/"]


# ---------------------------------------------------------------------------------------------- polling
class FakeClient:
    """The client calls the poller makes, with offsets, recording what was asked."""

    def __init__(self) -> None:
        self.center = ["center started", "T_0001 queued"]
        self.analyzer = ["## A_0002: ready", "hello"]
        self.alive = True
        self.asked: list[tuple[str, int]] = []
        self.tasks = [task("T_0001", "RUNNING"), task("A_0002", "RUNNING", phase="ready")]

    def get_dlnest_output(self, offset: int) -> dict[str, Any]:
        self.asked.append(("center", offset))
        return {"offset": offset, "end": len(self.center), "missed": 0, "lines": self.center[offset:]}

    def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
        return [TaskRecord.from_json({"submitted_at": 0.0, "kind": t["task_id"][0], **t}) for t in self.tasks]

    def get_devices_info(self) -> list[DeviceInfo]:
        return [DeviceInfo(node="n", gpu=0, total_mb=1, free_mb=1, reserved_mb=0)]

    def get_analyze_output(self, task_id: str, offset: int = 0, wait_s: float = 0.0) -> dict[str, Any]:
        self.asked.append((task_id, offset))
        lines = self.analyzer[offset:]
        return {"offset": offset, "end": len(self.analyzer), "missed": 0, "lines": lines, "alive": self.alive}


def lines_of(log: LineLog) -> list[str]:
    return [text_of(line) for line in log.lines]


def test_poll_reads_incrementally_by_offset() -> None:
    client, state = FakeClient(), ShellState()
    state.watch("A_0002")
    poll_once(client, state)
    client.center.append("T_0001 launched")
    client.analyzer.append("bye")
    client.alive = False
    poll_once(client, state)
    poll_once(client, state)  # ended: the analyzer is not asked again
    assert client.asked == [("center", 0), ("A_0002", 0), ("center", 2), ("A_0002", 2), ("center", 3)]
    assert lines_of(state.center) == ["center started", "T_0001 queued", "T_0001 launched"]
    assert lines_of(state.output) == ["## A_0002: ready", "hello", "bye", "-- A_0002 has ended --"]
    assert [t["task_id"] for t in state.tasks] == ["T_0001", "A_0002"] and state.error == ""
    state.watch(None)
    assert lines_of(state.output) == []


def test_poll_follows_a_run_output_file_by_bytes(tmp_path: Path) -> None:
    """Only the run's own part of the file: an earlier task's output (a continued package) is not it."""
    from dlnest_ray.savepack.outputs import marker_line

    client, state = FakeClient(), ShellState()
    package = tmp_path / "pkg"
    package.mkdir()
    client.tasks = [{**task("T_0002", "RUNNING"), "package": str(package)}]
    earlier = f"{marker_line('T_0001')}\nT_0001 epoch 0\n"
    (package / "_output.txt").write_text(f"{earlier}{marker_line('T_0002')}\nepoch 0\npartial")
    state.watch("T_0002")
    poll_once(client, state)  # tasks first, then the file: the package is known in the same pass
    assert lines_of(state.output)[1:] == ["epoch 0"]
    assert lines_of(state.output)[0].startswith("== T_0002 started")
    with open(package / "_output.txt", "a") as f:
        f.write(" line\nepoch 1\n")
    client.tasks[0]["status"] = "SUCCEEDED"
    poll_once(client, state)
    assert lines_of(state.output)[1:] == ["epoch 0", "partial line", "epoch 1", "-- T_0002 SUCCEEDED --"]


def test_poll_errors_are_shown_not_raised() -> None:
    class Broken(FakeClient):
        def get_task_info(self, include_finished: bool = False) -> list[dict[str, Any]]:
            raise DlnestError("the center is unavailable (RayActorError); retry in a few seconds")

    state = ShellState()
    state.watch("T_0009")  # unknown: one red line in the pane, and it stops asking
    poll_once(Broken(), state)
    assert "the center is unavailable" in state.error
    assert lines_of(state.output) == ["no task 'T_0009' (the task pane lists them)"]
    assert not state.watched_alive


def test_importing_the_shell_command_is_light() -> None:
    code = (
        "import sys; import dlnest_ray.cli.shell as s; assert callable(s.shell);"
        "heavy = {'prompt_toolkit', 'ray', 'torch'} & {m.split('.')[0] for m in sys.modules};"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_cli_verb_is_a_shell_verb_or_refused_with_a_reason() -> None:
    """A new `dlnest-ray` command cannot be missing from the shell: it runs there (CLI_VERBS) or is
    refused with a reason (REFUSED); the shell's own verbs do not shadow a CLI command by accident."""
    from dlnest_ray.cli.app import app
    from dlnest_ray.cli.shell.commands import CLI_VERBS, REFUSED, SHELL_VERBS

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert commands == set(CLI_VERBS) | set(REFUSED) | {"watch", "exp"}
    assert not set(CLI_VERBS) & set(REFUSED)
    assert set(SHELL_VERBS) & commands == {"watch", "exp"}  # same meaning in the shell, its own output
