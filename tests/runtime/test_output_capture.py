"""Output capture is at the file-descriptor level: print, os.write to fd 1 and 2, and child processes."""

from __future__ import annotations

import sys

from dlnest_ray import SavePackage
from dlnest_ray.runtime.output import OutputTee
from dlnest_ray.runtime.trainer import TrainOptions, train
from tests.projects import write_project

NOISE = (
    "noise: print",
    "noise: os.write fd1",
    "noise: os.write fd2",
    "noise: from-child",
    "noise: sys.stderr",
)


def test_everything_the_run_writes_lands_in_the_output_file(tmp_path, capfd):
    cfg = write_project(tmp_path / "proj", epochs=1, noisy=True)
    pkg = SavePackage(cfg).save_to_new_dir()
    seen: list[bytes] = []
    train(pkg, TrainOptions(cpu=True, console=seen.append))
    out = (pkg / "_output.txt").read_text()
    for line in NOISE:
        assert line + "\n" in out, line
    assert "Epoch #0 finished!" in out
    console = b"".join(seen).decode()
    for line in NOISE:
        assert line in console, line
    # nothing reached the real stdout/stderr without console=True
    captured = capfd.readouterr()
    assert "noise:" not in captured.out + captured.err


def test_console_true_copies_to_the_terminal_and_appends(tmp_path, capfd):
    target = tmp_path / "out.txt"
    target.write_text("earlier\n")
    with OutputTee(target, console=True):
        print("from print")
        sys.stderr.write("from stderr\n")
    captured = capfd.readouterr()
    assert "from print" in captured.out + captured.err
    assert "from stderr" in captured.out + captured.err
    text = target.read_text()
    assert text.startswith("earlier\n")
    assert "from print\n" in text and "from stderr\n" in text
    print("after the tee")
    assert "after the tee" in capfd.readouterr().out
    assert "after the tee" not in target.read_text()
