"""A run's ``nice`` (the niceness of its ranks): checked at submit, for runs, continuations and every
trial of a sweep, before anything is created; the rank process applies it to each of its threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.checks import DEFAULT_NICE, checked_nice, config_nice
from dlnest_ray.errors import DlnestError
from tests.projects import write_project

from ._helpers import info


@pytest.mark.parametrize("good", [0, 10, 19])
def test_a_whole_number_from_0_to_19_is_a_niceness(good: int) -> None:
    assert checked_nice(good) == good
    assert config_nice({"nice": good}) == good


def test_without_the_key_ranks_run_at_the_default() -> None:
    assert config_nice({}) == DEFAULT_NICE == 10


@pytest.mark.parametrize("bad", [-1, 20, "5", 2.0, True, None])
def test_anything_else_is_one_line_naming_the_key(bad: object) -> None:
    with pytest.raises(DlnestError) as e:
        config_nice({"nice": bad})
    assert "config key nice" in str(e.value) and "19" in str(e.value) and "\n" not in str(e.value)


def _packages(project: Path) -> list[Path]:
    saves = project.parent / "Saves"
    return sorted(saves.iterdir()) if saves.exists() else []


def test_a_bad_nice_refuses_the_run_and_creates_nothing(center: Center, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "bad", extra={"nice": 25})
    with pytest.raises(DlnestError, match="config key nice must be from 0"):
        center.run_train(str(cfg), placement="cpu")
    with pytest.raises(DlnestError, match="config key nice"):
        center.sweep(str(cfg), space={"model_config.lr": "0.01,0.1"}, placement="cpu")
    good = write_project(tmp_path / "good", extra={"nice": 5})
    with pytest.raises(DlnestError, match=r"config key nice must be from 0 .* got 30"):  # one trial's
        center.sweep(str(good), space={"nice": "5,30"}, placement="cpu")
    assert _packages(cfg) == [] and _packages(good) == []
    assert center.get_task_info(include_finished=True) == [] and center.get_sweeps() == []


def test_a_continuation_checks_its_package_config(center: Center, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", extra={"nice": 3})
    task = center.run_train(str(cfg), placement="cpu")
    package = Path(info(center, task)["package"])
    args = json.loads((package / "args.json").read_text())
    assert args["nice"] == 3
    (package / "args.json").write_text(json.dumps({**args, "nice": "low"}))  # edited by hand
    with pytest.raises(DlnestError, match="config key nice 'low' is not a whole number"):
        center.continue_train(str(package), placement="cpu")


LOWER = """
import json, os, sys, threading
from dlnest_ray.runtime.priority import lower_priority
before = threading.Event(); stop = threading.Event()
def idle(): before.set(); stop.wait()
t = threading.Thread(target=idle); t.start(); before.wait()  # a thread that exists before
got = lower_priority(int(sys.argv[1]))
later = []
t2 = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0))); t2.start(); t2.join()
nices = [os.getpriority(os.PRIO_PROCESS, int(x)) for x in os.listdir("/proc/self/task")]
print(json.dumps({"got": got, "threads": nices, "later": later[0]}))
stop.set(); t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_lower_priority_sets_every_thread_and_later_ones_inherit() -> None:
    out = subprocess.run([sys.executable, "-c", LOWER, "7"], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["got"] == 7
    assert len(got["threads"]) >= 2 and set(got["threads"]) == {7}  # the thread started before too
    assert got["later"] == 7


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_lower_priority_never_raises_a_priority() -> None:
    out = subprocess.run(
        ["nice", "-n", "12", sys.executable, "-c", LOWER, "7"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    got = json.loads(out.stdout)
    assert got["got"] == 12 and set(got["threads"]) == {12}
