"""``dlnest-ray shell`` in a real terminal (tmux, 160x48) on a real local cluster (``up``, fake GPUs).

Everything is typed into the shell's command line: two gated runs make the second one wait (PENDING,
with its reason), then run (RUNNING), then end (SUCCEEDED) as the gates open; an analyzer of the first
package is started, watched, and runs a script whose printed line must appear in the analyzer pane.
``exit`` must leave the analyzer running and end the shell's process. The tmux server has its own
socket, and the cluster its own RAY_TMPDIR; both are torn down whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import cli, free_port, gated_project, json_out, session_pids, wait_for

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

SCRIPT = 'def experience(self):\n    print("hello from the analyzer, checkpoint", self.checkpoint_id)\n'
MANY = 'def experience(self):\n    for i in range(90):\n        print(f"line {i:03d}")\n'


@dataclass(kw_only=True)
class Term:
    """One tmux server (own socket) running the shell in session ``shell``."""

    socket: str
    env: dict[str, str]

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], env=self.env, capture_output=True, text=True, check=check
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "shell").stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", "shell", "-l", line)
        self.tmux("send-keys", "-t", "shell", "Enter")

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "shell", check=False).returncode == 0

    def shows(self, pattern: str, *, timeout: float, what: str) -> str:
        def check() -> str:
            screen = self.screen()
            return screen if re.search(pattern, screen) else ""

        try:
            return str(wait_for(check, timeout=timeout, what=what, every=0.3))
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- screen:\n{self.screen()}") from None


@pytest.fixture(scope="module")
def cluster_env() -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="dlr-sh-", dir="/tmp"))
    home = base / "home"
    env = {
        "DLNEST_RAY_FAKE_GPUS": "2x16000",
        "DLNEST_RAY_HOME": str(home),
        "RAY_TMPDIR": str(base),
        "DLNEST_RAY_CANCEL_GRACE_S": "3",
        "BASE": str(base),
    }
    sid = 0
    try:
        up = cli("up", "--num-gpus", "2", "--home", home, "--port", free_port(), "--dashboard-port", "0",
                 env=env, timeout=240)  # fmt: skip
        assert up.returncode == 0, str(up)
        sid = int(json.loads((home / "head.json").read_text())["session_id"])
        yield env
    finally:
        if not sid and (home / "head.json").exists():
            sid = int(json.loads((home / "head.json").read_text())["session_id"])
        down = cli("down", "--force", env=env, timeout=180)
        left = session_pids(sid) if sid else []
        for pid in left:  # last resort, only this head's processes
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        assert down.returncode == 0, str(down)
        assert not left, f"processes of the head outlived `down --force`: {left}"


@pytest.fixture
def term(cluster_env: dict[str, str]) -> Iterator[Term]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TMUX")} | cluster_env
    env["OMP_NUM_THREADS"] = "2"
    t = Term(socket=f"dlr-shell-{os.getpid()}", env=env)
    command = f"{sys.executable} -m dlnest_ray shell"
    cwd = cluster_env["BASE"]
    t.tmux("new-session", "-d", "-s", "shell", "-x", "160", "-y", "48", "-c", cwd, command)
    try:
        yield t
    finally:
        t.tmux("kill-server", check=False)


def test_shell_runs_watches_and_exits_without_touching_tasks(term: Term, cluster_env: dict[str, str]) -> None:
    base = Path(cluster_env["BASE"])
    gate1, gate2 = base / "gate1", base / "gate2"
    config1 = gated_project(base / "p1", gate1)
    config2 = gated_project(base / "p2", gate2)
    (base / "p1" / "AnalyzeScripts").mkdir()
    (base / "p1" / "AnalyzeScripts" / "hello.py").write_text(SCRIPT)
    (base / "p1" / "AnalyzeScripts" / "many.py").write_text(MANY)

    term.shows(r"center log", timeout=60, what="the shell's screen")
    term.shows(r"gpu1\s+16000/16000", timeout=60, what="the devices pane")
    term.type("config --delay 1")
    term.type(f"run {config1} -m 12000 -d first")
    term.shows(r"T_0001\s+RUNNING", timeout=60, what="T_0001 running")
    term.type("config --devices gpu0")  # gpu1 off: the second run cannot fit beside the first
    term.shows(r"off \S+:gpu1", timeout=60, what="gpu1 disabled")
    term.type(f"run {config2} -m 12000 -d second")
    screen = term.shows(r"T_0002\s+PENDING.*second\s+needs 1", timeout=60, what="T_0002 pending, with why")
    assert re.search(r"\S+:gpu0\s+4000/16000\s+12000\s+T_0001", screen), screen  # the devices pane

    gate1.touch()  # T_0001 ends; T_0002 takes gpu0 and waits at its own gate
    term.shows(r"T_0001\s+SUCCEEDED", timeout=60, what="T_0001 succeeded")
    term.shows(r"T_0002\s+RUNNING", timeout=60, what="T_0002 running")
    gate2.touch()
    screen = term.shows(r"T_0002\s+SUCCEEDED", timeout=60, what="T_0002 succeeded")
    assert "T_0002 SUCCEEDED" in screen  # the center log pane
    term.type("config --devices all")

    package = next((base / "p1" / "Saves").iterdir())
    term.type(f"analyze {package} --cpu")
    term.shows(r"analyzer: A_0003", timeout=60, what="the analyzer queued")
    term.type("watch A_0003")
    term.shows(r"analyzer A_0003", timeout=60, what="the analyzer pane's title")
    term.type("exp hello")
    screen = term.shows(r"hello from the analyzer, checkpoint 0", timeout=60, what="the script's line")
    assert re.search(r"hello on A_0003 succeeded", screen) or "## exp 1 hello" in screen, screen

    # PageUp moves the output pane on the very key press (the review saw it one press behind)
    term.type("exp many")
    term.shows(r"many on A_0003 succeeded", timeout=60, what="the script's end")
    term.shows(r"line 089", timeout=30, what="90 lines in the analyzer pane")
    term.tmux("send-keys", "-t", "shell", "PPage")
    screen = term.shows(r"output scrolled back \d+ lines", timeout=10, what="the scrolled-back status")
    assert "line 089" not in screen and re.search(r"line 0[0-7]\d", screen), screen
    term.tmux("send-keys", "-t", "shell", "NPage")
    term.shows(r"line 089", timeout=10, what="the pane following its end again")

    # help: too long for the messages pane, shown from its top in the output pane; Esc closes it
    term.type("help")
    screen = term.shows(r"help \(PgUp/PgDn scroll", timeout=10, what="the help pane")
    assert "commands (as `dlnest-ray COMMAND`" in screen and "run CONFIG [-m MB]" in screen, screen
    term.tmux("send-keys", "-t", "shell", "Escape")
    term.shows(r"analyzer A_0003", timeout=10, what="the analyzer pane back")

    # watching a task that does not exist says so, and the pane keeps what it showed
    term.type("watch T_9999")
    screen = term.shows(r"error: no task 'T_9999'", timeout=30, what="the refusal")
    assert "output of T_9999" not in screen and "analyzer A_0003" in screen, screen

    term.type("exit")
    wait_for(lambda: not term.alive(), timeout=60, what="the shell's process to end")
    tasks = {t["task_id"]: t for t in json_out(cli("tasks", "--all", "--json", env=cluster_env))}
    assert tasks["A_0003"]["status"] == "RUNNING" and not tasks["A_0003"].get("cancelling"), tasks["A_0003"]
    assert [tasks[t]["status"] for t in ("T_0001", "T_0002")] == ["SUCCEEDED", "SUCCEEDED"]
