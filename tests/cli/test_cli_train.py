"""``dlnest-ray train`` / ``analyze`` on tiny projects: success, failure, resume, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlnest_ray import SavePackage
from tests.cli.helpers import package_from, run_cli, run_cli_tty_stderr, single_error_line
from tests.projects import write_freq, write_project

FAIL_AT_1 = {"DLNEST_TEST_FAIL_AT_EPOCH": "1"}


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.slow
def test_blank_project_trains_with_its_defaults(tmp_path):
    project = tmp_path / "blank"
    assert run_cli("new", project).returncode == 0
    result = run_cli("train", "root_config.json", "--cpu", cwd=project)
    assert result.returncode == 0, str(result)
    pkg = package_from(result)
    assert pkg.parent == project / "Saves"
    assert (
        "finished epoch 1 (2 epochs in all, 32 steps)" in result.stdout
    )  # 2 epochs of 1024 samples in batches of 64
    out = (pkg / "_output.txt").read_text()
    assert "Epoch 0 |" in out and "Epoch 1 |" in out and "val acc" in out
    assert "Epoch 1 |" in result.stdout  # the run's output is shown on the console too
    opened = SavePackage.open(pkg)
    assert opened.state_dict()["finished_epoch"] == 1
    assert opened.checkpoint_ids()  # kept per the template's tracks


@pytest.mark.slow
def test_failure_then_resume(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=3)
    failed = run_cli_tty_stderr("train", cfg, "--cpu", cwd=tmp_path, env=FAIL_AT_1)
    assert failed.returncode == 1, str(failed)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, str(failed)
    assert "\x1b[31m" in lines[0]  # red
    plain = re.sub(r"\x1b\[[0-9;]*m", "", lines[0])
    assert plain.startswith("error: training failed: RuntimeError: injected failure at epoch 1")
    pkg = package_from(failed)
    assert "Traceback (most recent call last)" in failed.stdout  # the run's output reached the console
    out_before = (pkg / "_output.txt").read_text()
    assert "RuntimeError: injected failure at epoch 1" in out_before

    resumed = run_cli("train", "--resume", pkg, "--cpu", cwd=tmp_path)
    assert resumed.returncode == 0, str(resumed)
    assert "finished epoch 2 (3 epochs in all, 12 steps); 3 checkpoints kept (ids 0, 1, 2)" in resumed.stdout
    out = (pkg / "_output.txt").read_text()
    assert out.startswith(out_before)
    assert "resuming from checkpoint 0 (epoch 0)" in out[len(out_before) :]
    segs = json.loads((pkg / "_package.json").read_text())["segments"]
    assert [(s["kind"], s["status"], s["start_epoch"]) for s in segs] == [
        ("train", "failed", 0),
        ("resume", "succeeded", 1),
    ]


@pytest.mark.slow
def test_no_save_twice_keeps_both_packages(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    first = run_cli("train", cfg, "--no-save", "--cpu", cwd=tmp_path)
    second = run_cli("train", cfg, "--no-save", "--cpu", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, str(first) + str(second)
    a, b = package_from(first), package_from(second)
    assert a != b
    assert a.name.startswith("NOSAVE_") and b.name.startswith("NOSAVE_")
    for pkg in (a, b):
        assert pkg.is_dir() and SavePackage.open(pkg).checkpoint_ids() == [0]
    assert entries(cfg.parent / "Saves") == {a.name, b.name}


def test_name_by_desc_names_the_package(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=1)
    result = run_cli("train", cfg, "--cpu", "--desc", "first-try", "--name-by-desc", cwd=tmp_path)
    assert result.returncode == 0, str(result)
    pkg = package_from(result)
    assert pkg == cfg.parent / "Saves" / "first-try"
    assert json.loads((pkg / "_package.json").read_text())["description"] == "first-try"
    # the same name again is refused and the existing package is left as it was
    before = {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()}
    again = run_cli("train", cfg, "--cpu", "-d", "first-try", "--name-by-desc", cwd=tmp_path)
    line = single_error_line(again)
    assert "already exists" in line
    assert {p: p.read_bytes() for p in pkg.rglob("*") if p.is_file()} == before
    assert entries(cfg.parent / "Saves") == {"first-try"}


# ------------------------------------------------------------------------------------------- bad input
def _missing_config(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    return ["train", cfg.parent / "nope.json", "--cpu"], cfg.parent / "Saves", "config file not found"


def _malformed_json(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    (cfg.parent / "model_config.json").write_text('{\n    "model_config": {"hidden": 4,,}\n}\n')
    return ["train", cfg, "--cpu"], cfg.parent / "Saves", r"model_config\.json:2:\d+: malformed JSON"


def _malformed_freq(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    freq = tmp_path / "freq.json"
    freq.write_text('{"epochs": 1\n')
    return ["train", cfg, "-f", freq, "--cpu"], cfg.parent / "Saves", r"freq\.json:\d+:\d+: malformed JSON"


def _resume_not_a_package(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    return ["train", "--resume", cfg.parent, "--cpu"], cfg.parent / "Saves", "is not a save package"


def _analyze_not_a_package(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    script = tmp_path / "ok.py"
    script.write_text("def experience(self):\n    return 1\n")
    return ["analyze", cfg.parent, "--script", script], cfg.parent / "Saves", "is not a save package"


def _script_without_experience(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    pkg = SavePackage(cfg).save_to_new_dir("made-by-the-test")
    script = tmp_path / "noexp.py"
    script.write_text("def something_else(self):\n    return 1\n")
    return ["analyze", pkg, "--script", script], pkg / "Checkpoints", "defines no experience"


def _missing_script(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    pkg = SavePackage(cfg).save_to_new_dir("made-by-the-test")
    return ["analyze", pkg, "--script", tmp_path / "absent.py"], pkg / "Checkpoints", "script not found"


def _analyze_without_checkpoint(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    pkg = SavePackage(cfg).save_to_new_dir("made-by-the-test")
    script = tmp_path / "ok.py"
    script.write_text("def experience(self):\n    return 1\n")
    return ["analyze", pkg, "--script", script], pkg / "Checkpoints", "no valid checkpoint"


def _name_escaping_save_root(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    args = ["train", cfg, "--cpu", "--name-by-desc", "--desc", "../x"]
    return args, cfg.parent / "Saves", "invalid package name"


def _name_by_desc_without_desc(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    return ["train", cfg, "--cpu", "--name-by-desc"], cfg.parent / "Saves", "--name-by-desc needs --desc"


def _cpu_and_gpu(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    return ["train", cfg, "--cpu", "--gpu", "0"], cfg.parent / "Saves", "exclude each other"


def _resume_with_config(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    pkg = SavePackage(cfg).save_to_new_dir("made-by-the-test")
    return ["train", cfg, "--resume", pkg, "--cpu"], pkg / "Checkpoints", "continues an existing package"


def _missing_required_key(tmp_path: Path) -> tuple[list, Path, str]:
    cfg = write_project(tmp_path / "proj")
    root = json.loads(cfg.read_text())
    del root["dataset_name"], root["checkpoint_args"]["dilation_in_slow_track"]
    cfg.write_text(json.dumps(root))
    # every missing key at once, as the config module promises
    return (
        ["train", cfg, "--cpu"],
        cfg.parent / "Saves",
        (r"missing required keys: dataset_name, checkpoint_args\.dilation_in_slow_track"),
    )


BAD_INPUTS = [
    _missing_config,
    _malformed_json,
    _malformed_freq,
    _resume_not_a_package,
    _analyze_not_a_package,
    _script_without_experience,
    _missing_script,
    _analyze_without_checkpoint,
    _name_escaping_save_root,
    _name_by_desc_without_desc,
    _cpu_and_gpu,
    _resume_with_config,
    _missing_required_key,
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_error_line_and_leaves_nothing_behind(tmp_path, case):
    args, watched, pattern = case(tmp_path)
    before = entries(watched)
    everything_before = {p for p in tmp_path.rglob("*") if "__pycache__" not in p.parts}
    result = run_cli(*args, cwd=tmp_path)
    line = single_error_line(result)
    assert re.search(pattern, line), line
    assert entries(watched) == before
    created = {p for p in tmp_path.rglob("*") if "__pycache__" not in p.parts} - everything_before
    # an empty save_root folder may appear; never a package or anything outside it
    assert all(p.is_dir() and not any(p.iterdir()) and p.name == "Saves" for p in created), created
    assert not (tmp_path / "x").exists()


def test_freq_config_overrides_and_is_snapshotted(tmp_path):
    cfg = write_project(tmp_path / "proj", epochs=5)
    freq = write_freq(tmp_path / "short.json", epochs=1)
    result = run_cli("train", cfg, "-f", freq, "--cpu", cwd=tmp_path)
    assert result.returncode == 0, str(result)
    pkg = package_from(result)
    assert "finished epoch 0 (1 epoch in all, 4 steps)" in result.stdout
    assert json.loads((pkg / "args.json").read_text())["epochs"] == 1
    manifest = json.loads((pkg / "_package.json").read_text())
    assert manifest["freq_config"] and (pkg / manifest["freq_config"]).read_text() == freq.read_text()
