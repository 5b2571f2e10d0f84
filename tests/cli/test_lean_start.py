"""The CLI's lean start (issue 16): a process registers only the command it runs, and coerces plain
option values without pydantic, and neither changes what a command accepts, refuses or prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from dlnest_ray.cli import coercion
from dlnest_ray.cli.app import COMMANDS, build_app, command_named

from .helpers import run_cli


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tasks"], "tasks"),
        (["tasks", "--json"], "tasks"),
        (["del", "T_0001"], "del"),
        (["--token-file", "/x/token", "exp", "A_0001", "s.py"], "exp"),
        (["--token-file=/x/token", "run", "c.json"], "run"),
        ([], None),  # no command: the whole app's help
        (["--help"], None),
        (["-V"], None),
        (["--help", "tasks"], None),  # the root's --help wins in click: the whole app
        (["taks"], None),  # an unknown command: click suggests `tasks` from the whole app
        (["shell"], None),  # the shell runs every other command through its root group
        (["--token-file"], None),
    ],
)
def test_command_named(argv: list[str], expected: str | None) -> None:
    assert command_named(argv) == expected


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_lone_command_has_the_whole_apps_help(name: str) -> None:
    """``dlnest-ray NAME --help`` reads the same whether the app holds every command or only NAME."""
    whole = CliRunner().invoke(build_app(), [name, "--help"], prog_name="dlnest-ray")
    lone = CliRunner().invoke(build_app(name), [name, "--help"], prog_name="dlnest-ray")
    assert whole.exit_code == lone.exit_code == 0, whole.output + lone.output
    assert lone.output == whole.output
    assert f"dlnest-ray {name}" in lone.output


def test_a_command_imports_neither_pydantic_nor_other_commands(tmp_path: Path) -> None:
    """``metrics`` on a folder that is not a package: one error line, and the process never imported
    pydantic (Typer's default coercion) nor the modules of other commands."""
    code = (
        "import sys\n"
        "from dlnest_ray.cli.app import main\n"
        "try:\n"
        f"    main(['metrics', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('pydantic', 'dlnest_ray.cli')))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "exit 1", proc.stdout + proc.stderr
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    modules = set(lines[1].split(","))
    assert "dlnest_ray.cli.metrics" in modules
    assert not {m for m in modules if m.startswith("pydantic")}, modules
    others = {f"dlnest_ray.cli.{module}" for module, _ in COMMANDS.values()} - {"dlnest_ray.cli.metrics"}
    assert not modules & others, modules & others


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--num-gpus", "1.5"], "Invalid value for '--num-gpus': '1.5' is not a valid integer."),
        (["config", "--margin", "lots"], "Invalid value for '--margin': 'lots' is not a valid number."),
        (
            ["watch", "T_0001", "--rank", "first"],
            "Invalid value for '--rank' / '-r': 'first' is not a valid integer.",
        ),
    ],
)
def test_a_bad_number_is_a_usage_error(args: list[str], message: str) -> None:
    result = run_cli(*args, timeout=120)
    assert result.returncode == 2, result
    assert message in result.stderr, result
    assert "Traceback" not in result.stderr


@pytest.fixture
def probe_app() -> typer.Typer:
    """A small app whose command echoes the type and value of each plain kind of parameter."""
    assert coercion.install() in (True, False)  # idempotent; False on a Typer without pydantic coercion
    app = typer.Typer()

    @app.command()
    def probe(
        path: Path,
        count: Annotated[int, typer.Option("--count")] = 1,
        ratio: Annotated[float | None, typer.Option("--ratio")] = None,
        name: Annotated[str, typer.Option("--name")] = "x",
        tags: Annotated[list[str] | None, typer.Option("--tag")] = None,
        files: Annotated[list[Path] | None, typer.Option("--file")] = None,
        flag: Annotated[bool, typer.Option("--flag")] = False,
        bounded: Annotated[int, typer.Option("--bounded", min=1, max=9)] = 5,
    ) -> None:
        for value in (path, count, ratio, name, tags, files, flag, bounded):
            typer.echo(f"{type(value).__name__}:{value!r}")

    return app


def test_plain_values_keep_their_types(probe_app: typer.Typer, tmp_path: Path) -> None:
    args = ["p.json", "--count", "3", "--ratio", "0.5", "--name", "n", "--tag", "a", "--tag", "b"]
    args += ["--file", "f1", "--flag", "--bounded", "7"]
    result = CliRunner().invoke(probe_app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("Path('p.json')") and lines[0].split(":")[0] in {"PosixPath", "Path"}
    assert lines[1:5] == ["int:3", "float:0.5", "str:'n'", "list:['a', 'b']"]
    assert lines[5].startswith("list:[") and "Path('f1')" in lines[5]
    assert lines[6:] == ["bool:True", "int:7"]


def test_defaults_and_bounds_stay_typers(probe_app: typer.Typer) -> None:
    result = CliRunner().invoke(probe_app, ["p"])
    assert result.exit_code == 0, result.output
    defaults = ["int:1", "NoneType:None", "str:'x'", "NoneType:None", "NoneType:None", "bool:False", "int:5"]
    assert result.output.splitlines()[1:] == defaults
    # a bounded option is not plain: Typer checks it as before
    refused = CliRunner().invoke(probe_app, ["p", "--bounded", "12"])
    assert refused.exit_code == 2
    assert "--bounded" in refused.output


def test_plain_and_special_parameters() -> None:
    info = typer.models.OptionInfo()
    assert coercion.plain(int, info) and coercion.plain(list[str], info) and coercion.plain(Path, info)
    assert not coercion.plain(dict, info)
    assert not coercion.plain(int, typer.models.OptionInfo(min=1))
    assert not coercion.plain(Path, typer.models.OptionInfo(exists=True))
    assert not coercion.plain(str, typer.models.OptionInfo(parser=str.upper))
