"""``dlnest-ray --help`` stays light; ``dlnest-ray new`` writes DLNest's project layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlnest_ray.config import load_config, resolve_layout
from tests.cli.helpers import run_cli, single_error_line

HEAVY = {"torch", "ray", "pyarrow", "pynvml"}
MNIST_FILES = {
    "AnalyzeScripts/getAcc.py",
    "AnalyzeScripts/showModel.py",
    "Dataset/Dataset.py",
    "Model/MNISTCNN.py",
    "Model/Model.py",
    "common_config.json",
    "dataset_config.json",
    "freq_config.json",
    "model_config.json",
    "root_config.json",
    "LifeCycle.py",
}


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def imported_modules(importtime_stderr: str) -> set[str]:
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name.split(".")[0])
    return names


ALL_COMMANDS = [
    "new",
    "train",
    "analyze",
    "exp",
    "metrics",
    "compare",
    "shell",
    "up",
    "down",
    "run",
    "continue",
    "tasks",
    "devices",
    "del",
    "config",
    "log",
    "watch",
]


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in ALL_COMMANDS])
def test_help_imports_no_heavy_module(args):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dlnest_ray", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Usage" in proc.stdout
    modules = imported_modules(proc.stderr)
    assert {"dlnest_ray", "typer"} <= modules  # the parsing works
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("new", "train", "analyze"):
        assert command in result.stdout


def test_import_dlnest_ray_imports_no_heavy_module():
    code = "import sys, dlnest_ray; print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = set(proc.stdout.strip().split(","))
    assert "dlnest_ray" in modules
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_new_mnist_writes_the_dlnest_layout(tmp_path):
    target = tmp_path / "mnist"
    result = run_cli("new", target, "--mnist")
    assert result.returncode == 0, str(result)
    assert str(target) in result.stdout
    assert set(files_in(target)) == MNIST_FILES
    root = json.loads((target / "root_config.json").read_text())
    assert root["root_file_path"] == "."
    assert root["save_root"] == "./Saves"
    for key in ("model_file_path", "dataset_file_path", "life_cycle_file_path"):
        assert not Path(root[key]).is_absolute()
    assert all(not Path(p).is_absolute() for p in root["other_file_paths"] + root["child_jsons"])
    loaded = load_config(target / "root_config.json")
    layout = resolve_layout(loaded.args, target, source="test")  # every code file exists
    assert layout.save_root == target / "Saves"
    assert json.loads((target / "freq_config.json").read_text()) == {}
    # movable: the same project resolves relative to its new place
    moved = tmp_path / "moved"
    target.rename(moved)
    assert resolve_layout(load_config(moved / "root_config.json").args, moved, source="t").root_dir == moved


def test_new_mnist_with_data_records_the_folder(tmp_path, mnist_dir):
    target = tmp_path / "p"
    assert run_cli("new", target, "--mnist", "--data", mnist_dir).returncode == 0
    cfg = json.loads((target / "dataset_config.json").read_text())
    assert cfg["dataset_config"]["data_root"] == str(mnist_dir)


def test_new_refuses_a_non_empty_folder(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    line = single_error_line(run_cli("new", target, "--mnist"))
    assert str(target) in line
    assert files_in(target) == {"notes.txt": b"mine"}


def test_new_into_an_existing_empty_folder(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    assert run_cli("new", target).returncode == 0
    assert (target / "root_config.json").is_file()


def test_data_without_mnist_is_refused(tmp_path):
    single_error_line(run_cli("new", tmp_path / "x", "--data", tmp_path))
    assert not (tmp_path / "x").exists()


def test_examples_mnist_is_identical_to_new_mnist(tmp_path, repo_root):
    target = tmp_path / "fresh"
    assert run_cli("new", target, "--mnist").returncode == 0
    example = repo_root / "examples" / "mnist"
    assert example.is_dir(), "examples/mnist is missing"
    got, want = files_in(target), {k: v for k, v in files_in(example).items() if not k.startswith("Saves/")}
    assert sorted(want) == sorted(got)
    for name in got:
        assert want[name] == got[name], f"examples/mnist/{name} differs from `new --mnist`"


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "dlnest-ray"
    assert script.is_file()
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dlnest-ray" in proc.stdout and "train" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["fly"], "No such command"), (["train", "--ckpt", "abc"], "--ckpt"), (["analyze"], "Missing argument")],
)
def test_usage_errors_print_usage_not_a_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, str(result)
    assert message in result.stderr
    assert "Traceback" not in result.stderr, str(result)


def test_kept_checkpoints_read_as_ids() -> None:
    from dlnest_ray.cli.foreground import kept_text

    assert kept_text([]) == "no checkpoint kept"
    assert kept_text([0]) == "1 checkpoint kept (id 0)"  # not "checkpoints kept: 0", read as "none"
    assert kept_text([0, 3, 4]) == "3 checkpoints kept (ids 0, 3, 4)"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_version(flag: str) -> None:
    from importlib.metadata import version

    result = run_cli(flag)
    assert result.returncode == 0, str(result)
    assert result.stdout.strip() == f"dlnest-ray {version('dlnest-ray')}"


def test_new_names_a_damaged_template_config_with_its_line(tmp_path, monkeypatch) -> None:
    import dlnest_ray.project as project_mod
    from dlnest_ray.errors import ConfigError

    template = tmp_path / "template"
    template.mkdir()
    (template / "dataset_config.json").write_text('{\n  "dataset_config": {,\n}\n')
    monkeypatch.setattr(project_mod, "_template", lambda name: template)
    with pytest.raises(ConfigError, match=r"dataset_config\.json:2:\d+: malformed JSON"):
        project_mod.create_project(tmp_path / "p", mnist=True, data_root=tmp_path)
