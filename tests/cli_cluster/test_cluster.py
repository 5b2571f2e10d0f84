"""The cluster commands end to end on one local head started by ``dlnest-ray up`` (fake GPUs).

One head for the whole module (``up --num-gpus 2`` with ``DLNEST_RAY_FAKE_GPUS=2x16000``), in its own
Ray temp dir (``RAY_TMPDIR``), so no other Ray cluster on the machine sees it or is touched by it. The
tests run in file order and share the queue: runs T_0001/T_0002 wait at a gate file until the watch
test opens it, so "both running on GPU 0" and "a third one waits" are deterministic.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray import SavePackage
from tests.cli.helpers import Cli, single_error_line
from tests.dlnest_projects import write_dlnest032_mnist
from tests.projects import write_project
from tests.smtp_server import SmtpServer

from .helpers import (
    cli,
    free_port,
    gated_project,
    json_out,
    port_open,
    ray_tasks,
    session_pids,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@dataclass
class Cluster:
    env: dict[str, str]
    home: Path
    base: Path
    up: Cli
    state: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: object, timeout: float = 120, env: dict[str, str] | None = None) -> Cli:
        return cli(*args, env={**self.env, **(env or {})}, timeout=timeout)

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["task_id"]: t for t in json_out(self("tasks", "--all", "--json"))}

    def head(self) -> dict[str, Any]:
        return json.loads((self.home / "head.json").read_text())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="dlr-", dir="/tmp"))  # short: Ray's socket paths live under it
    home = base / "home"
    user = base / "user"  # a user's home without ~/.ray/auth_token: `up` makes the cluster's token
    user.mkdir()
    env = {
        "DLNEST_RAY_FAKE_GPUS": "2x16000",
        "DLNEST_RAY_HOME": str(home),
        "RAY_TMPDIR": str(base),
        "DLNEST_RAY_CANCEL_GRACE_S": "3",
        "HOME": str(user),
    }
    sids: list[int] = []
    try:
        up = cli(
            "up",
            "--num-gpus",
            "2",
            "--home",
            home,
            "--port",
            free_port(),
            "--dashboard-port",
            "0",
            env=env,
            timeout=240,
        )
        assert up.returncode == 0, str(up)
        c = Cluster(env=env, home=home, base=base, up=up)
        sids.append(int(c.head()["session_id"]))
        yield c
    finally:
        if (home / "head.json").exists():  # the head of the last `up` (a test may stop and restart it)
            sids.append(int(json.loads((home / "head.json").read_text())["session_id"]))
        down = cli("down", "--force", env=env, timeout=180)
        left = [pid for sid in set(sids) for pid in session_pids(sid)]
        for pid in left:  # last resort, only this head's processes (never `ray stop`: it stops every cluster)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        assert down.returncode == 0, str(down)
        assert not left, f"processes of the head outlived `down --force`: {left}"


def test_up_started_a_head_and_is_idempotent(cluster: Cluster) -> None:
    first = cluster.up.stdout
    assert "started a local Ray head at" in first
    assert "dlnest-ray is up" in first
    head = cluster.head()
    assert head["started_by"] == "dlnest-ray" and head["num_gpus"] == 2
    assert port_open(head["address"])
    again = cluster("up", "--num-gpus", "2")
    assert again.returncode == 0, str(again)
    assert "dlnest-ray is already up" in again.stdout
    assert "started a local Ray head" not in again.stdout
    for out in (first, again.stdout):
        assert "dashboard: http://127.0.0.1:" in out
        assert ":gpu0" in out and ":gpu1" in out and "16000" in out
    assert cluster.head() == head


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_the_head_yields_the_cpus_to_other_sessions_and_its_workers_keep_the_usual_priority(
    cluster: Cluster,
) -> None:
    """`up --nice` (default 10): the head's session, as one scheduling group (Linux autogroups), has that
    niceness; Ray's workers start at 0 (not Ray's 15), so the center stays ahead of the ranks (10)."""
    pids = session_pids(int(cluster.head()["session_id"]))
    if Path(f"/proc/{pids[0]}/autogroup").exists():
        groups = {Path(f"/proc/{pid}/autogroup").read_text().split()[-1] for pid in pids}
        assert groups == {"10"}, groups
    center = [pid for pid in pids if _comm(pid).startswith("ray::CenterActo")]
    assert center and os.getpriority(os.PRIO_PROCESS, center[0]) == 0
    bad = cluster("up", "--nice", "25")
    assert single_error_line(bad) == (
        "error: --nice must be from 0 (the usual priority) to 19 (the lowest), got 25"
    )


def test_devices_json(cluster: Cluster) -> None:
    rows = json_out(cluster("devices", "--json"))
    assert [(r["gpu"], r["total_mb"], r["free_mb"], r["reserved_mb"], r["enabled"]) for r in rows] == [
        (0, 16000, 16000, 0, True),
        (1, 16000, 16000, 0, True),
    ]
    assert len({r["node"] for r in rows}) == 1
    cluster.state["node"] = rows[0]["node"]


def test_the_head_requires_its_token(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A head `up` started runs in Ray's token mode with a token in the home (0600, recorded in
    head.json); a process without it is refused by Ray itself and changes nothing; a process given only
    RAY_AUTH_TOKEN_PATH connects; a wrong or empty token is one clear line."""
    head = cluster.head()
    token = Path(head["auth_token"])
    assert token == cluster.home / "auth_token"
    assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) == 64
    for name in ("head.json", "center.json"):
        assert stat.S_IMODE((cluster.home / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(cluster.home.stat().st_mode) == 0o700
    assert f"auth token: {token}" in cluster.up.stdout
    assert (
        f"RAY_AUTH_TOKEN_PATH={token} RAY_AUTH_MODE=token RAY_worker_niceness=0 "
        f"ray start --address {head['address']}" in cluster.up.stdout
    )
    assert "Token authentication is disabled" not in (cluster.home / "ray_start.log").read_text()

    stranger = tmp_path_factory.mktemp("stranger")  # a HOME without ~/.ray/auth_token, no RAY_AUTH_*
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DLNEST_RAY_"))}
    bare |= {"HOME": str(stranger), "RAY_TMPDIR": str(cluster.base)}
    before = cluster("log").stdout
    plain = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={head['address']!r}); print('CONNECTED')"],
        env=bare,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert plain.returncode != 0 and "CONNECTED" not in plain.stdout
    assert "Authentication token is missing or incorrect" in plain.stderr
    assert cluster("log").stdout == before  # the center saw nothing of it

    address = ["--address", head["address"]]
    refused = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", "tasks", *address], env=bare, capture_output=True, text=True
    )
    line = single_error_line(Cli(refused.returncode, refused.stdout, refused.stderr))
    assert "requires an auth token and this process has none" in line
    wrong = stranger / "wrong"
    wrong.write_text("0" * 64)
    refused = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", "--token-file", str(wrong), "tasks", *address],
        env=bare,
        capture_output=True,
        text=True,
    )
    line = single_error_line(Cli(refused.returncode, refused.stdout, refused.stderr))
    assert f"refused the auth token from {wrong}" in line
    empty = stranger / "empty"
    empty.write_text("")
    refused = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", "--token-file", str(empty), "tasks", *address],
        env=bare,
        capture_output=True,
        text=True,
    )
    assert f"the auth token file {empty} is empty" in single_error_line(
        Cli(refused.returncode, refused.stdout, refused.stderr)
    )

    given = bare | {"RAY_AUTH_TOKEN_PATH": str(token)}  # the token file alone is enough
    ok = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", "tasks", "--json", *address],
        env=given,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
    code = (  # a library user's own SIGTERM handler stays theirs (only the CLI replaces Ray's)
        "import signal, dlnest_ray\n"
        "def mine(*_): pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "n = len(dlnest_ray.connect(create=False).get_devices_info())\n"
        "print(n, signal.getsignal(signal.SIGTERM) is mine)"
    )
    py = subprocess.run(
        [sys.executable, "-c", code],
        env=given | {"RAY_ADDRESS": head["address"]},
        capture_output=True,
        text=True,
    )
    assert py.returncode == 0 and py.stdout.strip() == "2 True", py.stderr


def test_config_shows_and_changes_settings(cluster: Cluster) -> None:
    changed = json_out(cluster("config", "--max-per-device", "1", "--json"))
    assert changed["max_tasks_per_device"] == 1 and changed["disabled"] == []
    back = cluster("config", "--max-per-device", "10000")
    assert back.returncode == 0 and back.stdout.strip() == "max tasks per device: 10000", str(back)
    shown = cluster("config")
    assert shown.returncode == 0, str(shown)
    assert re.search(r"max tasks per device\W+10000\b", shown.stdout), shown.stdout
    assert f"{cluster.state['node']}:gpu0 {cluster.state['node']}:gpu1" in shown.stdout


def test_bad_requests_are_refused_at_submit_without_a_package(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("bad")
    config = write_project(folder / "proj", epochs=1)
    root = json.loads(config.read_text())
    root["model_file_path"] = "./Model/Missing.py"
    config.write_text(json.dumps(root))
    line = single_error_line(cluster("run", config, "--memory", "6000"))
    assert "Missing.py" in line
    good = write_project(folder / "good", epochs=1)
    line = single_error_line(cluster("run", good, "--memory", "40000"))
    assert "never run here" in line
    assert not (folder / "proj" / "Saves").exists() and not (folder / "good" / "Saves").exists()
    assert cluster.tasks() == {}


def test_two_runs_share_gpu0(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("gated")
    gate = folder / "gate"
    config = gated_project(folder / "proj", gate)
    a = json_out(cluster("run", config, "--memory", "6000", "--desc", "first", "--json"))
    b = json_out(cluster("run", config, "-m", "6000", "--json"))
    assert (a["task_id"], b["task_id"]) == ("T_0001", "T_0002")
    assert Path(a["package"]).parent == folder / "proj" / "Saves" and Path(a["package"]).is_dir()
    cluster.state.update(gate=gate, config=config, a=a, b=b)
    tasks = cluster.tasks()
    for t in (tasks["T_0001"], tasks["T_0002"]):
        assert t["status"] == "RUNNING", t
        assert (t["node"], t["gpus"], t["mb_per_gpu"]) == (cluster.state["node"], [0], 6000)
    assert tasks["T_0001"]["description"] == "first"
    gpu0 = json_out(cluster("devices", "--json"))[0]
    assert gpu0["reserved_mb"] == 12000 and sorted(gpu0["tasks"]) == ["T_0001", "T_0002"]
    table = cluster("tasks")
    assert (
        table.returncode == 0
        and "RUNNING" in table.stdout
        and f"{cluster.state['node']}:gpu0" in table.stdout
    )


def test_third_run_waits_with_a_reason_and_can_be_deleted(cluster: Cluster) -> None:
    node = cluster.state["node"]
    disabled = cluster("config", "--devices", f"{node}:gpu0")
    assert disabled.returncode == 0 and f"{node}:gpu1" in disabled.stdout, str(disabled)
    c = json_out(cluster("run", cluster.state["config"], "--memory", "6000", "--json"))
    assert (c["task_id"], c["status"]) == ("T_0003", "PENDING")
    pending = json_out(cluster("tasks", "--json"))
    assert [t["task_id"] for t in pending] == ["T_0001", "T_0002", "T_0003"]
    reason = pending[2]["wait_reason"]
    assert reason, pending[2]
    deleted = cluster("del", "T_0003")
    assert deleted.returncode == 0 and "removed from the queue" in deleted.stdout, str(deleted)
    watched = cluster("watch", "T_0003")  # exit 1 with one line: it ended CANCELLED
    assert single_error_line(watched) == "error: T_0003 CANCELLED: deleted while pending"
    enabled = json_out(cluster("config", "--devices", "all", "--json"))
    assert enabled["disabled"] == []


def test_watch_follows_a_run_to_its_end(cluster: Cluster) -> None:
    out_path = cluster.base / "watch.out"
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | cluster.env
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlnest_ray", "watch", "T_0001"],
            env=full,
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: b"waiting at the gate" in out_path.read_bytes(),
                timeout=60,
                what="the run's first line",
            )
            time.sleep(1.0)
            assert proc.poll() is None  # still following: the run waits at the gate
            cluster.state["gate"].touch()
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = out_path.read_text()
    assert proc.returncode == 0, text + err.decode()
    assert text.index("waiting at the gate") < text.index("Epoch #0 finished")  # printed while following
    assert text.rstrip().splitlines()[-1] == "T_0001 SUCCEEDED"
    assert text.rstrip().splitlines()[-3].startswith("latest: ep 0 loss ")  # the run's latest metrics
    assert text.rstrip().splitlines()[-2] == "epochs: finished epoch 0, 1 in all"  # how many really ran
    package_output = Path(cluster.state["a"]["package"]) / "_output.txt"
    assert package_output.read_text() in text
    tasks = wait_for(
        lambda: (t := cluster.tasks()) and t["T_0002"]["status"] == "SUCCEEDED" and t,
        timeout=60,
        what="T_0002 to succeed",
    )
    assert tasks["T_0001"]["status"] == "SUCCEEDED"
    assert "SUCCEEDED" in cluster("tasks", "--all").stdout
    assert json_out(cluster("tasks", "--json")) == []


def test_continue_resumes_a_package(cluster: Cluster) -> None:
    package = cluster.state["a"]["package"]
    d = json_out(cluster("continue", package, "--memory", "6000", "--desc", "more", "--json"))
    assert d["task_id"] == "T_0004" and d["package"] == package
    watched = cluster("watch", "T_0004", timeout=120)
    assert watched.returncode == 0, str(watched)
    assert watched.stdout.rstrip().splitlines()[-1] == "T_0004 SUCCEEDED"
    assert cluster.tasks()["T_0004"]["resume"] is True
    # the package's output file now holds both tasks: each `watch` shows its own part only
    assert watched.stdout.startswith("== T_0004 started ")
    assert "resuming from checkpoint" in watched.stdout and "waiting at the gate" not in watched.stdout
    first = cluster("watch", "T_0001")
    assert first.returncode == 0, str(first)
    assert first.stdout.startswith("== T_0001 started ") and "waiting at the gate" in first.stdout
    assert "T_0004" not in first.stdout and "resuming from checkpoint" not in first.stdout


def test_an_analyzer_through_the_cli(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    from dlnest_ray.savepack.package import SavePackage

    package = cluster.state["a"]["package"]
    scripts = tmp_path_factory.mktemp("scripts")
    (scripts / "hello.py").write_text(
        "def experience(self):\n    print('hello from', type(self.model).__name__)\n"
        "    return len(self.log['acc'])\n"
    )
    started = json_out(cluster("analyze", package, "--scripts", scripts, "--memory", "2000", "--json"))
    aid = started["task_id"]
    assert aid.startswith("A_") and started["scripts"] == str(scripts)
    epochs = len(SavePackage.open(package).state_dict()["log_dict"]["acc"])
    got = cluster("exp", aid, "hello")  # waits for the load, then streams the script's output
    assert got.returncode == 0, str(got)
    assert got.stdout.splitlines() == ["hello from Model", f"result: {epochs}"]
    again = cluster("exp", "hello")  # the analyzer started last is the default
    assert again.returncode == 0 and again.stdout == got.stdout, str(again)
    assert "outside the scripts folder" in single_error_line(cluster("exp", aid, "../x"))
    assert "ready" in cluster("tasks").stdout
    assert "being stopped" in cluster("del", aid).stdout
    wait_for(lambda: cluster.tasks()[aid]["status"] == "SUCCEEDED", timeout=60, what="the analyzer to end")
    replay = cluster("watch", aid)  # ended: its output is read back from the package
    assert replay.returncode == 0, str(replay)
    assert "hello from Model" in replay.stdout and replay.stdout.rstrip().endswith(f"{aid} ended")


def test_ray_shows_each_run_as_it_ended(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ray's own view (the state API behind `ray list tasks` and the dashboard) must agree with
    dlnest-ray: succeeded runs' rank tasks FINISHED, a failed run's FAILED with its error, a cancelled
    one's FAILED as stopped (as Ray shows tasks it cancels) — and nothing else failed, although every
    CLI process that submitted them has long exited."""
    folder = tmp_path_factory.mktemp("ends")
    failing = write_project(folder / "failing", epochs=2, fail_at_epoch=0, n_train=64, n_val=32)
    f = json_out(cluster("run", failing, "--memory", "2000", "--json"))["task_id"]
    gate = folder / "never-opened"
    g = json_out(cluster("run", gated_project(folder / "gated", gate), "--memory", "2000", "--json"))[
        "task_id"
    ]
    pkg = Path(cluster.tasks()[g]["package"])
    wait_for(
        lambda: (pkg / "_output.txt").exists() and "waiting at the gate" in (pkg / "_output.txt").read_text(),
        timeout=90,
        what=f"{g} to reach its gate",
    )
    assert "being stopped" in cluster("del", g).stdout
    ended = wait_for(
        lambda: (
            (t := cluster.tasks()) and all(t[x]["status"] in ("FAILED", "CANCELLED") for x in (f, g)) and t
        ),
        timeout=120,
        what="the failing and the cancelled run to end",
    )
    assert (ended[f]["status"], ended[g]["status"]) == ("FAILED", "CANCELLED")
    assert (
        (pkg / "_output.txt")
        .read_text()
        .rstrip()
        .endswith("stopped at epoch 0 by request; no checkpoint kept")
    )
    assert "Traceback" not in (pkg / "_output.txt").read_text()

    def ray_view() -> dict[str, tuple[str, str, str]] | None:
        rows = ray_tasks(cluster.head()["address"], cluster.env)
        ranks = {name.split()[0]: (state, etype, msg) for name, state, etype, msg in rows if " rank0" in name}
        return ranks if all(x in ranks and ranks[x][0] in ("FINISHED", "FAILED") for x in (f, g)) else None

    ranks = wait_for(ray_view, timeout=60, what="Ray to record the rank tasks' ends")
    for tid in ("T_0001", "T_0002", "T_0004"):
        assert ranks[tid][0] == "FINISHED", (tid, ranks[tid])
    assert ranks[f][:2] == ("FAILED", "TASK_EXECUTION_EXCEPTION") and "RuntimeError" in ranks[f][2]
    assert ranks[g][0] == "FAILED" and "RunStopped" in ranks[g][2] and "by request" in ranks[g][2]
    failed = [r for r in ray_tasks(cluster.head()["address"], cluster.env) if r[1] == "FAILED"]
    # the other failed task is a call refused on purpose above (an escaping script name, which the center
    # forwarded to the analyzer): its exception is the refusal; no task was failed by Ray for a dead worker
    # or an ended job. The refused submits (bad configs) came over the fast path: never Ray tasks at all.
    assert all(r[2] == "TASK_EXECUTION_EXCEPTION" for r in failed), failed
    others = [r for r in failed if r[0].split()[0] not in (f, g)]
    assert sorted(r[0] for r in others) == ["AnalyzerActor.submit"], others


def test_a_dlnest_032_project_through_the_cluster_with_its_environment(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path
) -> None:
    """DLNest 0.3.2-style code (only imports changed) as a 2-rank DDP run on the fake GPUs, continued
    and analyzed; the submitting shell's variables reach the ranks (a mail password among them, never
    shown anywhere), terminal and placement variables do not; --no-env and --env."""
    folder = tmp_path_factory.mktemp("d032")
    with SmtpServer() as smtp:
        cfg = write_dlnest032_mnist(
            folder / "mnist", data_root=mnist_dir, epochs=0, smtp_port=smtp.port, n_train=256
        )
        shell = {
            "DLNEST_MAIL_PASSWORD": "s3cret-pw",
            "DLNEST_TEST_ECHO": "hello from my shell",
            "TERM": "xterm-from-my-shell",
            "CUDA_VISIBLE_DEVICES": "7",
        }
        run = json_out(cluster("run", cfg, "--ddp", "--gpus", "2", "-m", "4000", "--json", env=shell))
        tid, package = run["task_id"], Path(run["package"])
        watched = cluster("watch", tid, timeout=240)
        assert watched.returncode == 0, str(watched)
        assert "epochs: finished epoch 0, 1 in all" in watched.stdout  # `epoch >= epochs` with epochs 0
        for rank in (0, 1):
            out = (package / f"_output_{rank}.txt").read_text()
            assert "echo from the submitting shell: hello from my shell" in out
        seg = SavePackage.open(package).meta["segments"][-1]
        assert seg["world_size"] == 2
        assert {"DLNEST_MAIL_PASSWORD", "DLNEST_TEST_ECHO"} <= set(seg["environment"])
        assert not {"TERM", "CUDA_VISIBLE_DEVICES", "PWD", "RAY_TMPDIR"} & set(seg["environment"])
        assert [m.subject for m in smtp.mails] == ["Train Finished!"]  # rank 0 only
        assert smtp.mails[0].login == ("me@example.org", "s3cret-pw")

        more = json_out(
            cluster(
                "continue", package, "--no-env", "--env", "DLNEST_TEST_ECHO=explicit", "-m", "4000", "--json"
            )
        )
        again = cluster("watch", more["task_id"], timeout=240)
        assert again.returncode == 0, str(again)
        assert "echo from the submitting shell: explicit" in again.stdout
        assert SavePackage.open(package).meta["segments"][-1]["environment"] == ["DLNEST_TEST_ECHO"]
        assert smtp.mails[-1].login == ("me@example.org", "")  # --no-env: the password did not travel

    analyzer = json_out(cluster("analyze", package, "--cpu", "--json"))["task_id"]
    got = cluster("exp", analyzer, "getAcc", timeout=180)
    assert got.returncode == 0, str(got)
    assert re.search(r"Accuracy: 0\.\d+", got.stdout), got.stdout
    assert "being stopped" in cluster("del", analyzer).stdout
    wait_for(
        lambda: cluster.tasks()[analyzer]["status"] == "SUCCEEDED", timeout=60, what="the analyzer to end"
    )
    # the secret is nowhere dlnest-ray shows or keeps anything
    shown = [cluster("tasks", "--all", "--json").stdout, cluster("log").stdout]
    kept = [(cluster.home / "center.json").read_text(), (package / "args.json").read_text()]
    kept.append((package / "_package.json").read_text())
    assert not any("s3cret-pw" in text for text in shown + kept)
    assert not (cluster.home / "env" / f"{tid}.json").exists()  # dropped when the task ended


PARITY = [
    ("tasks", "--all", "--json"),
    ("tasks", "--all"),
    ("devices", "--json"),
    ("config", "--json"),
    ("sweeps", "--json"),
    ("log",),
    ("del", "T_9999"),
    ("continue", "/nowhere/pkg"),
]


@pytest.mark.parametrize("args", PARITY, ids=" ".join)
def test_the_fast_path_and_ray_give_the_same_answers(cluster: Cluster, args: tuple[str, ...]) -> None:
    """Issue 16: commands on the head node reach the center over its socket; through Ray (the fast path
    turned off) every answer, message and exit code is the same."""
    fast = cluster(*args)
    slow = cluster(*args, env={"DLNEST_RAY_NO_FAST_PATH": "1"})
    assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout), f"{fast}\n{slow}"
    if fast.returncode:
        assert single_error_line(fast) == single_error_line(slow)


def test_the_fast_path_needs_neither_ray_nor_torch(cluster: Cluster) -> None:
    """With Ray and torch unimportable, `tasks` still answers: the CLI did not start a Ray driver."""
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['torch'] = None; "
        "from dlnest_ray.cli.app import main; main(['tasks', '--json'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**env, **cluster.env}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), list)
    mode = (cluster.home / "center.sock").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_log_shows_and_clears_the_center_messages(cluster: Cluster) -> None:
    shown = cluster("log")
    assert shown.returncode == 0, str(shown)
    for text in ("T_0001 queued", "T_0001 launched on", "T_0003 deleted while pending", "T_0001 SUCCEEDED"):
        assert text in shown.stdout, text
    assert "cleared" in cluster("log", "--clear").stdout
    assert "T_0001 queued" not in cluster("log").stdout


def test_a_follower_stopped_by_sigterm_exits_quietly(cluster: Cluster) -> None:
    """Ray's core prints a stack dump on SIGTERM (`*** SIGTERM received ... PC: @`); a `log --follow` or
    `watch` that a script or a terminal multiplexer terminates must just exit (143)."""
    assert cluster("config", "--devices", "all").returncode == 0  # a line in the center's log
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | cluster.env
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlnest_ray", "log", "--follow"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)  # it printed the log: connected, following
        assert ready and proc.stdout.readline()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err.decode()
    assert b"SIGTERM" not in err and b"PC: @" not in err, err.decode()


def test_down_force_keeps_a_pending_run_queued_and_up_runs_it(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The review's case: two runs RUNNING, one PENDING behind them. `down --force` cancels the running
    ones, which frees their GPUs; the pending run must not be launched into the cluster going away, and
    after the next `up` it is PENDING (never FAILED) and runs; the center's log survived too."""
    folder = tmp_path_factory.mktemp("down")
    gate = folder / "never-opened"
    gated = gated_project(folder / "gated", gate)
    running = [json_out(cluster("run", gated, "--memory", "12000", "--json")) for _ in range(2)]
    assert [r["status"] for r in running] == ["RUNNING", "RUNNING"]
    plain = write_project(folder / "plain", epochs=1, n_train=64, n_val=32)
    waiting = json_out(cluster("run", plain, "--memory", "12000", "--json"))
    w = waiting["task_id"]
    assert waiting["status"] == "PENDING"
    refused = cluster("down")
    line = single_error_line(refused)
    assert all(r["task_id"] in line for r in running) and "--force" in line
    head = cluster.head()
    forced = cluster("down", "--force", timeout=180)
    assert forced.returncode == 0, str(forced)
    assert "nothing new starts" in forced.stdout and "1 pending task(s) stay queued" in forced.stdout
    assert "stopped the center" in forced.stdout and "stopped the local Ray head" in forced.stdout
    assert not (cluster.home / "head.json").exists()
    assert not port_open(head["address"])
    assert session_pids(int(head["session_id"])) == []
    assert not _owner_processes(cluster.home)
    state = json.loads((cluster.home / "center.json").read_text())
    final = {t["task_id"]: t["status"] for t in state["tasks"]}
    assert [final[r["task_id"]] for r in running] == ["CANCELLED", "CANCELLED"]
    assert final[w] == "PENDING" and state["draining"] is True
    assert single_error_line(cluster("tasks")).startswith("error: no Ray cluster")
    assert cluster("down").stdout.strip() == "dlnest-ray is not running"

    again = cluster("up", "--num-gpus", "2", "--port", free_port(), "--dashboard-port", "0", timeout=240)
    assert again.returncode == 0, str(again)
    watched = cluster("watch", w, timeout=180)
    assert watched.returncode == 0, str(watched)
    assert watched.stdout.rstrip().splitlines()[-1] == f"{w} SUCCEEDED"
    log = cluster("log").stdout
    assert "draining: `dlnest-ray down` has begun" in log and f"{w} launched on" in log  # before and after
    assert log.index("draining") < log.index(f"{w} launched on")
    done = cluster("down")
    assert done.returncode == 0, str(done)
    assert wait_for(lambda: not _owner_processes(cluster.home), timeout=30, what="the owner to exit")


def _owner_processes(home: Path) -> list[int]:
    """The center owner's processes for this home (see dlnest_ray/actors/owner.py)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if b"dlnest_ray.actors.owner" in cmd and str(home).encode() in cmd:
                    found.append(int(entry))
    return found
