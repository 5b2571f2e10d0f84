"""Cluster commands without a cluster: light ``--help``, and one error line (exit 1) everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import single_error_line

from .helpers import cli

COMMANDS = ["up", "down", "run", "continue", "tasks", "devices", "del", "config", "log", "watch"]
COMMANDS += ["analyze", "exp", "shell", "metrics", "compare"]
NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


def test_main_help_lists_the_cluster_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert f" {command} " in result.stdout, command


@pytest.mark.ray
def test_every_command_says_no_cluster_in_one_line(tmp_path: Path) -> None:
    env = {"RAY_ADDRESS": NOWHERE, "DLNEST_RAY_HOME": str(tmp_path / "home")}
    config = tmp_path / "root_config.json"
    for args in (
        ["tasks"],
        ["tasks", "--all", "--json"],
        ["devices", "--json"],
        ["del", "T_0001"],
        ["config"],
        ["config", "--max-per-device", "1"],
        ["log"],
        ["watch", "T_0001"],
        ["run", config, "--memory", "6000"],
        ["continue", tmp_path / "package"],
        ["analyze", tmp_path / "package"],
        ["exp", "A_0001", "getAcc"],
        ["watch", "A_0001"],
    ):
        result = cli(*args, env=env, timeout=60)
        line = single_error_line(result)
        assert line.startswith("error: no Ray cluster: run `dlnest-ray up`"), (args, line)
        assert result.stdout == "", (args, str(result))
    assert not (tmp_path / "home").exists()


@pytest.mark.ray
def test_up_refuses_an_address_nobody_answers(tmp_path: Path) -> None:
    result = cli("up", "--address", NOWHERE, "--home", tmp_path / "home", timeout=60)
    assert "nothing answers at" in single_error_line(result)
    assert not (tmp_path / "home" / "head.json").exists()


def test_the_shell_needs_a_terminal(tmp_path: Path) -> None:
    result = cli("shell", env={"DLNEST_RAY_HOME": str(tmp_path)}, timeout=60)
    assert "the shell needs a terminal" in single_error_line(result)


def test_up_refuses_a_port_ray_keeps_for_workers(tmp_path: Path) -> None:
    for port in ("16399", "0", "70000"):
        result = cli("up", "--port", port, "--home", tmp_path / "home", timeout=60)
        assert f"--port {port} cannot be the GCS port" in single_error_line(result)
    assert not (tmp_path / "home" / "head.json").exists()


@pytest.mark.ray
def test_down_without_anything_up_says_so(tmp_path: Path) -> None:
    result = cli("down", env={"RAY_ADDRESS": NOWHERE, "DLNEST_RAY_HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 0, str(result)
    assert result.stdout.strip() == "dlnest-ray is not running"


def test_placement_flags_exclude_each_other(tmp_path: Path) -> None:
    result = cli("run", tmp_path / "root_config.json", "--cpu", "--ddp", env={"RAY_ADDRESS": NOWHERE})
    assert "exclude each other" in single_error_line(result)
    # --gpus without --ddp/--multi-gpu is a request the center validates (once, there): here it first
    # says there is no cluster to ask (tests/actors/test_center_submit.py checks the center's refusal)
    result = cli("run", tmp_path / "root_config.json", "--gpus", "2", env={"RAY_ADDRESS": NOWHERE})
    assert "nothing answers at" in single_error_line(result) or "no Ray cluster" in single_error_line(result)
