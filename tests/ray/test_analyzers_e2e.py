"""Persistent analyzers end to end on a local Ray with logical GPUs and the fake probe (2 x 16000 MB):
MNIST trained for one epoch through the queue, analyzed, scripts run (edited, raising, concurrent),
output followed from a wrapped offset, path escapes refused, a center restart survived, ``del``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.savepack.package import SavePackage
from tests.cli.helpers import Cli
from tests.projects import write_project
from tests.ray.local_cluster import TERMINAL, tasks, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ENV = {
    "DLNEST_RAY_FAKE_GPUS": "2x16000",
    "DLNEST_RAY_CANCEL_GRACE_S": "5",
    "DLNEST_RAY_ANALYZER_LINES": "100",  # small, so a chatty script wraps it
    "DLNEST_RAY_ANALYZER_CPUS": "0.5",  # analyzers and a 2-rank run fit on 2 CPUs
    "DLNEST_RAY_CPUS_PER_RANK": "0.5",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import ray

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    home = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in [*ENV, "DLNEST_RAY_HOME"]}
    os.environ.update(ENV, DLNEST_RAY_HOME=str(home))  # inherited by the workers Ray starts below
    ray.init(
        num_cpus=2,
        num_gpus=2,
        namespace=NAMESPACE,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,  # as the CLI: workers' output must not mix into what it prints
    )
    try:
        yield Client(get_or_create_center(str(home)))
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(*args: object, out: io.StringIO | None = None) -> Cli:
    """The CLI in this process (already connected to the test's Ray): exit code, stdout, stderr.
    ``out``: the buffer stdout goes to (another thread may read it while the command runs)."""
    from dlnest_ray.cli.app import main

    out, err = out or io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = int(e.code or 0)
    return Cli(code, out.getvalue(), err.getvalue())


def reserved(client: Any) -> dict[int, int]:
    return {d["gpu"]: d["reserved_mb"] for d in [d.to_json() for d in client.get_devices_info()]}


@pytest.fixture(scope="module")
def mnist(client: Any, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Path, Path, float]:
    """(project, package, recorded validation accuracy) of MNIST trained one epoch through the queue."""
    from dlnest_ray.cli.project import create_project

    project = create_project(tmp_path_factory.mktemp("mnist") / "mnist", mnist=True)
    freq = project / "one_epoch.json"
    freq.write_text(json.dumps({"epochs": 1}))
    tid = client.run_train(str(project / "root_config.json"), freq_path=str(freq), memory_mb=4000)
    wait_for(lambda: tasks(client)[tid]["status"] in TERMINAL, 300, "MNIST training")
    done = tasks(client)[tid]
    assert done["status"] == "SUCCEEDED", done["error"]
    package = Path(done["package"])
    acc = SavePackage.open(package).state_dict()["log_dict"]["acc"][-1]
    return project, package, float(acc)


@pytest.fixture(scope="module")
def analyzer(client: Any, mnist: tuple[Path, Path, float]) -> str:
    _, package, _ = mnist
    started = run("analyze", package)
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.split()[1]
    assert task_id.startswith("A_") and f"package: {package}" in started.stdout
    wait_for(lambda: tasks(client)[task_id]["phase"] == "ready", 120, "the analyzer to load")
    return task_id


def test_getacc_prints_the_recorded_validation_accuracy(client: Any, analyzer: str, mnist) -> None:
    _, package, acc = mnist
    task = tasks(client)[analyzer]
    # its memory: the training run's measured peak (the fake meter: its 300 MB context) plus 512 MB
    peak = SavePackage.open(package).meta["segments"][-1]["peak_gpu_mb"]
    assert peak == 300
    assert task["kind"] == "A" and task["status"] == "RUNNING" and task["mb_per_gpu"] == peak + 512
    got = run("exp", analyzer, "getAcc")
    assert got.returncode == 0, got.stderr
    assert f"Accuracy: {acc:.4f}" in got.stdout and f"result: {acc!r}" in got.stdout
    assert "## " not in got.stdout  # only the script's own lines
    again = run("exp", "getAcc")  # the analyzer started last is the default
    assert again.returncode == 0 and f"result: {acc!r}" in again.stdout
    info = client.analyzer_info(analyzer)
    assert info["checkpoint_id"] == 0 and info["scripts"] == str(package.parents[1] / "AnalyzeScripts")


def test_a_script_written_after_training_and_edited_between_runs(analyzer: str, mnist) -> None:
    project, _, _ = mnist
    script = project / "AnalyzeScripts" / "probe.py"
    script.write_text("def experience(self):\n    print('version one', type(self.model).__name__)\n")
    first = run("exp", analyzer, "probe")
    script.write_text("def experience(self):\n    self.seen = 'kept'\n    print('version two')\n")
    second = run("exp", analyzer, "probe.py")
    third = run("exp", analyzer, script)  # a local path inside the scripts folder
    assert (first.returncode, second.returncode, third.returncode) == (0, 0, 0)
    assert first.stdout.splitlines() == ["version one Model"]
    assert second.stdout.splitlines() == ["version two"]
    script.write_text("def experience(self):\n    return self.seen\n")
    assert run("exp", analyzer, "probe").stdout.strip() == "result: 'kept'"  # state persists


def test_a_raising_script_shows_the_traceback_and_the_analyzer_goes_on(analyzer: str, mnist) -> None:
    project, _, acc = mnist
    (project / "AnalyzeScripts" / "broken.py").write_text(
        "def experience(self):\n    print('about to fail')\n    return 1 / 0\n"
    )
    failed = run("exp", analyzer, "broken")
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[0] == "about to fail"
    assert "Traceback (most recent call last):" in failed.stdout and "ZeroDivisionError" in failed.stdout
    assert failed.stderr.strip() == f"error: broken failed on {analyzer}: ZeroDivisionError: division by zero"
    after = run("exp", analyzer, "getAcc")
    assert after.returncode == 0 and f"result: {acc!r}" in after.stdout


def test_two_concurrent_exps_run_in_submit_order(client: Any, analyzer: str, mnist) -> None:
    project, _, _ = mnist
    (project / "AnalyzeScripts" / "slow.py").write_text(
        "import time\n\n\ndef experience(self):\n    t = time.monotonic()\n"
        "    while time.monotonic() - t < 1.0:\n        pass\n    print('slow done')\n    return 'slow'\n"
    )
    results: dict[str, dict[str, Any]] = {}

    def call(name: str) -> None:
        results[name] = client.run_exp(analyzer, name)

    slow = threading.Thread(target=call, args=("slow",))
    slow.start()
    wait_for(lambda: client.analyzer_info(analyzer)["running"] == "slow", 30, "slow to start")
    fast = threading.Thread(target=call, args=("showModel",))
    fast.start()
    slow.join(60)
    fast.join(60)
    a, b = results["slow"], results["showModel"]
    assert a["state"] == b["state"] == "SUCCEEDED"
    assert a["job"] < b["job"] and a["end"] <= b["start"]
    lines = client.get_analyze_output(analyzer, a["start"])["lines"]
    assert lines[: a["end"] - a["start"]] == ["slow done"]


def test_escapes_and_missing_scripts_are_refused_with_one_line(analyzer: str, mnist) -> None:
    project, _, _ = mnist
    for name in ("../LifeCycle", "../root_config.json", str(project / "LifeCycle.py")):
        got = run("exp", analyzer, name)
        assert got.returncode == 1 and got.stdout == ""
        assert len(got.stderr.splitlines()) == 1 and "outside the scripts folder" in got.stderr, got.stderr
    missing = run("exp", analyzer, "nope")
    assert missing.returncode == 1 and "no script 'nope'" in missing.stderr and "getAcc" in missing.stderr
    (project / "AnalyzeScripts" / "noexp.py").write_text("x = 1\n")
    noexp = run("exp", analyzer, "noexp")
    assert (
        noexp.returncode == 1
        and "defines no experience(self)" in noexp.stderr
        and len(noexp.stderr.splitlines()) == 1
    )


def test_exp_timeout_interrupts_and_the_analyzer_stays(analyzer: str, mnist) -> None:
    project, _, acc = mnist
    (project / "AnalyzeScripts" / "spin.py").write_text(
        "def experience(self):\n    print('spinning', flush=True)\n    while True:\n        pass\n"
    )
    got = run("exp", analyzer, "spin", "--timeout", "1")
    assert got.returncode == 1 and got.stdout.splitlines() == ["spinning"]
    assert "timed out after 1 s; the analyzer stays loaded" in got.stderr
    assert f"result: {acc!r}" in run("exp", analyzer, "getAcc").stdout


def test_ray_users_can_call_the_actor_directly(analyzer: str, mnist) -> None:
    import ray

    from dlnest_ray.actors.names import NAMESPACE

    project, _, acc = mnist
    actor = ray.get_actor(analyzer, namespace=NAMESPACE)
    assert ray.get(actor.run_script.remote(str(project / "AnalyzeScripts" / "getAcc.py"))) == acc


def test_a_center_restart_keeps_the_analyzer_usable(client: Any, analyzer: str, mnist) -> None:
    import ray

    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import CENTER_NAME, NAMESPACE
    from dlnest_ray.errors import DlnestError

    _, _, acc = mnist
    ray.kill(ray.get_actor(CENTER_NAME, namespace=NAMESPACE), no_restart=False)

    def reattached() -> bool:  # the new center has read its state and found the analyzer's supervisor
        try:
            lines = Client(ray.get_actor(CENTER_NAME, namespace=NAMESPACE)).get_dlnest_output(0)["lines"]
        except (DlnestError, ValueError):
            return False
        return any(f"{analyzer} re-attached" in line for line in lines)

    wait_for(reattached, 60, "the center to restart")
    fresh = Client(ray.get_actor(CENTER_NAME, namespace=NAMESPACE))
    assert tasks(fresh)[analyzer]["status"] == "RUNNING"
    assert fresh.run_exp(analyzer, "getAcc")["result"] == repr(acc)


def test_a_ddp_package_loads_into_one_cpu_process(client: Any, tmp_path: Path) -> None:
    cfg = write_project(tmp_path / "p", epochs=1)
    scripts = tmp_path / "p" / "AnalyzeScripts"
    scripts.mkdir()
    (scripts / "acc.py").write_text(
        "def experience(self):\n    return (self.log['acc'][-1], str(self.status.env))\n"
    )
    tid = client.run_train(str(cfg), memory_mb=2000, placement="ddp", gpus=2)  # beside the MNIST analyzer
    wait_for(lambda: tasks(client)[tid]["status"] in TERMINAL, 180, "the DDP run")
    package = Path(tasks(client)[tid]["package"])
    assert tasks(client)[tid]["status"] == "SUCCEEDED", tasks(client)[tid]["error"]
    aid = client.analyze(str(package), placement="cpu")
    result = client.run_exp(aid, "acc")
    recorded = SavePackage.open(package).state_dict()["log_dict"]["acc"][-1]
    assert result["state"] == "SUCCEEDED" and result["result"] == repr((recorded, "CPU"))
    client.del_task(aid)
    wait_for(lambda: tasks(client)[aid]["status"] in TERMINAL, 60, "the CPU analyzer to end")


def test_a_package_that_fails_to_load_ends_the_task_failed_with_its_traceback(
    client: Any, tmp_path: Path
) -> None:
    cfg = write_project(tmp_path / "broken", epochs=1, fail_in_dataset_init=True)
    (tmp_path / "broken" / "AnalyzeScripts").mkdir()
    package = SavePackage(cfg).save_to_new_dir()  # never trained: analyzed without a checkpoint
    aid = client.analyze(str(package), ckpt_id=-2, placement="cpu")
    wait_for(lambda: tasks(client)[aid]["status"] in TERMINAL, 120, "the analyzer to fail")
    done = tasks(client)[aid]
    assert done["status"] == "FAILED"
    assert done["error"] == "loading failed: ValueError: injected failure in Dataset.init"
    tail = "\n".join(done["output_tail"])  # read back from the package's output file
    assert "Traceback" in tail and "injected failure in Dataset.init" in tail
    assert done["output_tail"][-2:] == [
        f"## {aid}: loading failed: ValueError: injected failure in Dataset.init",
        f"## {aid}: closed",
    ]
    refused = run("exp", aid, "acc")
    assert refused.returncode == 1 and f"{aid} has ended (FAILED: loading failed" in refused.stderr


def test_watch_from_a_wrapped_offset_then_del_releases_the_gpu(client: Any, analyzer: str, mnist) -> None:
    project, package, _ = mnist
    (project / "AnalyzeScripts" / "chatty.py").write_text(
        "def experience(self):\n    for i in range(150):\n        print('chatty', i)\n"
    )
    assert client.run_exp(analyzer, "chatty")["state"] == "SUCCEEDED"
    gpu = tasks(client)[analyzer]["gpus"][0]
    assert reserved(client)[gpu] >= tasks(client)[analyzer]["mb_per_gpu"] > 0
    watched: list[Cli] = []
    seen = io.StringIO()
    watcher = threading.Thread(target=lambda: watched.append(run("watch", analyzer, "--from", "0", out=seen)))
    watcher.start()
    wait_for(lambda: "chatty 149" in seen.getvalue(), 60, "the watcher to print the buffer")
    time.sleep(0.5)
    assert watcher.is_alive()  # it has printed what is there and is following
    assert "being stopped" in client.del_task(analyzer)
    watcher.join(60)
    assert not watcher.is_alive()
    out = watched[0]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[missed ") and "chatty 149" in lines
    assert lines[-1] == f"{analyzer} ended" and any(line.endswith(": closed") for line in lines)
    wait_for(lambda: tasks(client)[analyzer]["status"] in TERMINAL, 60, "the analyzer to end")
    assert tasks(client)[analyzer]["status"] == "SUCCEEDED"
    assert reserved(client)[gpu] == 0
    replay = run("watch", analyzer)  # ended: read back from the package, nothing missed
    kept = replay.stdout.splitlines()
    assert (
        replay.returncode == 0
        and not kept[0].startswith("[missed")
        and kept[0].startswith(f"## {analyzer}: loading")
    )
    assert (package / "_analyze_output.txt").is_file()
    gone = run("exp", analyzer, "getAcc")
    assert gone.returncode == 1 and f"{analyzer} has ended (SUCCEEDED)" in gone.stderr
