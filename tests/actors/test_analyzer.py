"""The analyzer actor run in-process: load once, scripts in submit order, state kept, output per job,
timeouts, refusals, and the output file that outlives it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlnest_ray.actors.analyzer import OUTPUT_FILE, AnalyzerActor, ScriptFailed, output_prefix
from dlnest_ray.errors import AnalysisError
from dlnest_ray.linebuffer import read_prefixed
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.scheduling.specs import Placement
from dlnest_ray.tasks import TaskKind, TaskRecord
from tests.projects import isolated_imports, write_project

SCRIPTS = {
    "acc.py": "def experience(self):\n    acc = self.log['acc'][-1]\n    print('acc', acc)\n    return acc\n",
    "store.py": "def experience(self):\n    self.counter = getattr(self, 'counter', 0) + 1\n"
    "    return self.counter\n",
    "boom.py": "def helper():\n    raise ValueError('boom')\n\n\ndef experience(self):\n    print('before')\n"
    "    helper()\n",
    "spin.py": "def experience(self):\n    print('spinning', flush=True)\n    while True:\n        pass\n",
    "slow.py": "import time\n\n\ndef experience(self):\n    t = time.monotonic()\n"
    "    while time.monotonic() - t < 0.3:\n        pass\n    print('slow done')\n",
    "noexp.py": "x = 1\n",
    "chatty.py": "def experience(self):\n    for i in range(30):\n        print('line', i)\n",
}


def wait_done(actor: AnalyzerActor, job: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = actor.job(job)
        if state["state"] not in ("QUEUED", "RUNNING"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish")


def job_lines(actor: AnalyzerActor, job: int) -> list[str]:
    """Everything a follower of the job sees, as ``exp`` reads it."""
    lines: list[str] = []
    offset = 0
    while True:
        out = actor.poll(job, offset, wait_s=2.0)
        lines += out["lines"]
        offset = out["end"]
        if out["job"]["state"] not in ("QUEUED", "RUNNING") and not out["lines"]:
            return lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("analyzer")
    with isolated_imports():
        from dlnest_ray.runtime.trainer import TrainOptions, train

        cfg = write_project(root / "proj", epochs=1)
        scripts = root / "proj" / "AnalyzeScripts"
        scripts.mkdir()
        for name, text in SCRIPTS.items():
            (scripts / name).write_text(text)
        pkg = SavePackage(cfg).save_to_new_dir()
        train(pkg, TrainOptions(cpu=True))
        yield Path(pkg), scripts


def make(
    package: Path, scripts: Path, task_id: str = "A_0001", submitted_at: float = 0.0, **kw
) -> AnalyzerActor:
    record = TaskRecord(
        task_id=task_id,
        kind=TaskKind.ANALYZE,
        package=str(package),
        submitted_at=submitted_at,
        placement=Placement.CPU,
        scripts=str(scripts),
    )
    return AnalyzerActor(record.to_json(), **kw)


_ids = iter(range(1, 1000))


@contextlib.contextmanager
def running(trained: tuple[Path, Path], **kw: object) -> Iterator[AnalyzerActor]:
    """A loaded analyzer for the body of one test: pytest re-points fd 1/2 between a test's phases,
    so the capture must start inside the test."""
    package, scripts = trained
    with isolated_imports():
        a = make(package, scripts, f"A_{next(_ids):04d}", **kw)
        try:
            assert a.ready(60) == {"loaded": True, "error": ""}
            yield a
        finally:
            a.close()


def test_loads_the_latest_checkpoint_and_runs_a_script(trained):
    with running(trained) as actor:
        package, _ = trained
        info = actor.info()
        assert info["loaded"] and info["checkpoint_id"] == 0 and info["device"] == "cpu"
        job = actor.submit("acc")
        assert job["state"] in ("QUEUED", "RUNNING") and job["path"].endswith("acc.py")
        done = wait_done(actor, job["job"])
        recorded = SavePackage.open(package).state_dict(0)["log_dict"]["acc"][-1]
        assert done["state"] == "SUCCEEDED" and done["result"] == repr(recorded)
        assert job_lines(actor, job["job"]) == [f"acc {recorded}"]


def test_state_persists_between_scripts_and_edits_take_effect(trained):
    with running(trained) as actor:
        _, scripts = trained
        assert actor.run_script("store") == 1  # a fresh analyzer: nothing stored yet
        assert actor.run_script("store.py") == 2
        edited = scripts / "edited.py"
        edited.write_text("def experience(self):\n    print('first version')\n")
        first = actor.submit("edited")["job"]
        wait_done(actor, first)
        edited.write_text("def experience(self):\n    print('second version')\n    return 2\n")
        second = actor.submit(str(edited))["job"]  # an absolute path inside the folder is accepted
        assert wait_done(actor, second)["result"] == "2"
        assert job_lines(actor, first) == ["first version"]
        assert job_lines(actor, second) == ["second version"]


def test_a_raising_script_shows_its_traceback_and_the_analyzer_goes_on(trained):
    with running(trained) as actor:
        job = actor.submit("boom")["job"]
        done = wait_done(actor, job)
        assert done["state"] == "FAILED" and done["error"] == "ValueError: boom"
        tb = done["traceback"]
        assert (
            tb.startswith("Traceback") and "boom.py" in tb and "in helper" in tb and "analyzer.py" not in tb
        )
        lines = job_lines(actor, job)
        assert lines[0] == "before" and lines[-1] == "ValueError: boom"
        with pytest.raises(ScriptFailed, match="ValueError: boom"):
            actor.run_script("boom")
        assert actor.run_script("acc") is not None


def test_a_poll_between_the_closing_line_and_the_end_sees_only_the_job(trained, monkeypatch):
    """The closing ``## exp`` line is written before the job's state flips: a follower polling in
    that window must still get the job's own lines only (CI once printed the closing line)."""
    with running(trained) as actor:
        seen: list[dict] = []
        note = actor._note

        def note_then_poll(message: str) -> None:
            note(message)
            ours = current is not None and message.startswith(f"exp {current} ")
            if ours and "started" not in message:  # the closing line is in, the job has not ended yet
                seen.append(actor.poll(current, 0, wait_s=0))

        current: int | None = None
        monkeypatch.setattr(actor, "_note", note_then_poll)
        current = actor.submit("acc")["job"]
        done = wait_done(actor, current)
        assert len(seen) == 1 and seen[0]["job"]["state"] == "RUNNING"
        assert seen[0]["lines"] == job_lines(actor, current) == [f"acc {done['result']}"]
        assert seen[0]["end"] == done["end"]


def test_a_job_that_ends_during_a_poll_is_not_reported_ended_before_its_last_lines(trained, monkeypatch):
    """A follower stops at the first poll that says the job ended (as ``exp`` does): a poll whose read
    came before the job's last line must not say so."""
    _, scripts = trained
    (scripts / "two.py").write_text(
        "import time\n\n\ndef experience(self):\n    print('first', flush=True)\n"
        "    t = time.monotonic()\n    while time.monotonic() - t < 0.3:\n        pass\n    print('second')\n"
    )
    with running(trained) as actor:
        read, held = actor.output.read, []

        def read_then_let_the_job_end(offset: int = 0) -> dict:
            out = read(offset)
            if "first" in out["lines"] and not held:
                held.append(wait_done(actor, job))  # the job ends after this read
            return out

        monkeypatch.setattr(actor.output, "read", read_then_let_the_job_end)
        job = actor.submit("two")["job"]
        lines, offset = [], 0
        while True:
            out = actor.poll(job, offset, wait_s=5.0)
            lines += out["lines"]
            offset = out["end"]
            if out["job"]["state"] not in ("QUEUED", "RUNNING"):
                break
        assert held and held[0]["state"] == "SUCCEEDED"
        assert lines == ["first", "second"]


def test_an_analyzer_closed_during_a_read_says_so_only_after_its_last_line(trained, monkeypatch):
    """``watch`` stops at the first read that says the analyzer is gone: that read must hold the end."""
    with running(trained) as actor:
        read, closed = actor.output.read, []

        def read_then_close(offset: int = 0) -> dict:
            out = read(offset)
            if not closed:
                closed.append(True)
                actor.close()  # the closing line is written after this read
            return out

        monkeypatch.setattr(actor.output, "read", read_then_close)
        lines, offset = [], 0
        while True:
            out = actor.read_output(offset)
            lines += out["lines"]
            offset = out["end"]
            if not out["alive"]:
                break
        assert closed and lines[-1] == f"## {actor.task_id}: closed"


def test_jobs_run_one_after_another_in_submit_order(trained):
    with running(trained) as actor:
        jobs: list[int] = []

        def submit(name: str) -> None:
            jobs.append(actor.submit(name)["job"])

        first = threading.Thread(target=submit, args=("slow",))
        first.start()
        first.join()
        submit("acc")
        a, b = (wait_done(actor, j) for j in jobs)
        assert a["state"] == b["state"] == "SUCCEEDED"
        assert a["end"] <= b["start"]
        assert job_lines(actor, jobs[0]) == ["slow done"]


def test_a_timeout_interrupts_the_script_and_keeps_the_analyzer(trained):
    with running(trained) as actor:
        before = actor.run_script("store")
        job = actor.submit("spin", timeout_s=0.5)["job"]
        done = wait_done(actor, job)
        assert done["state"] == "INTERRUPTED" and done["error"] == "timed out after 0.5 s"
        assert job_lines(actor, job) == ["spinning"]
        assert actor.run_script("store") == before + 1  # same context, still usable


def test_cancel_drops_a_queued_job_and_stops_a_running_one(trained):
    with running(trained) as actor:
        spinning = actor.submit("spin")["job"]
        queued = actor.submit("acc")["job"]
        assert actor.cancel_job(queued)["state"] == "INTERRUPTED"
        deadline = time.monotonic() + 10
        while actor.job(spinning)["state"] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.01)
        actor.cancel_job(spinning)
        assert wait_done(actor, spinning)["state"] == "INTERRUPTED"
        assert actor.job(queued)["start"] == -1  # it never ran
        assert actor.poll(queued, 0, wait_s=0)["lines"] == []  # so it has no output


@pytest.mark.parametrize("name", ["../outside", "../proj/root_config.json", "/etc/hostname", "sub/../../x"])
def test_names_outside_the_scripts_folder_are_refused(trained, name):
    with running(trained) as actor, pytest.raises(AnalysisError, match="outside the scripts folder"):
        actor.submit(name)


def test_missing_script_and_missing_experience(trained):
    with running(trained) as actor:
        with pytest.raises(AnalysisError, match=r"no script 'nope'.*scripts there: acc, boom"):
            actor.submit("nope")
        done = wait_done(actor, actor.submit("noexp")["job"])
        assert done["state"] == "FAILED" and "defines no experience(self)" in done["error"]
        assert done["traceback"] == ""
        with pytest.raises(AnalysisError, match="positive"):
            actor.submit("acc", timeout_s=0)


def test_output_is_kept_in_the_package_with_its_offsets(trained):
    with running(trained) as actor:
        package, _ = trained
        actor.run_script("chatty")
        live = actor.read_output(0)
        kept = read_prefixed(package / OUTPUT_FILE, output_prefix(actor.task_id, 0.0))
        assert live["missed"] == 0 and live["alive"]
        assert kept["lines"] == live["lines"] and kept["end"] == live["end"]
        assert kept["lines"][0].startswith(f"## {actor.task_id}: loading")
        assert "line 29" in kept["lines"]
        later = read_prefixed(package / OUTPUT_FILE, output_prefix(actor.task_id, 0.0), 5)
        assert later["lines"] == live["lines"][5:]


def test_one_task_id_from_two_center_homes_keeps_two_outputs(trained):
    """Ids are unique per home: a second home (another cluster on shared storage, or a fresh home)
    may analyze the same package as ``A_0950`` again. Each reads back only its own lines."""
    package, scripts = trained
    when = {"first": 1_763_700_000.0, "second": 1_763_700_000.5}
    with isolated_imports():
        for name, at in when.items():
            (scripts / f"say_{name}.py").write_text(f"def experience(self):\n    print('{name} home')\n")
            actor = make(package, scripts, "A_0950", at)
            try:
                actor.run_script(f"say_{name}")
            finally:
                actor.close()
    prefixes = {name: output_prefix("A_0950", at) for name, at in when.items()}
    assert prefixes["first"] != prefixes["second"] and prefixes["first"].startswith("[A_0950 ")
    for name, other in (("first", "second"), ("second", "first")):
        kept = read_prefixed(package / OUTPUT_FILE, prefixes[name])["lines"]
        assert f"{name} home" in kept and f"{other} home" not in kept
        assert kept[0].startswith("## A_0950: loading") and kept[-1] == "## A_0950: closed"


def test_a_small_buffer_drops_old_lines_and_says_how_many(trained, monkeypatch):
    package, scripts = trained
    monkeypatch.setenv("DLNEST_RAY_ANALYZER_LINES", "10")
    with isolated_imports():
        small = make(package, scripts, "A_0900")
        try:
            small.run_script("chatty")
            out = small.read_output(0)
            assert out["missed"] > 0 and out["offset"] == out["missed"] and len(out["lines"]) == 10
            assert out["lines"][-1].startswith("## exp 1 chatty: succeeded")
            kept = read_prefixed(package / OUTPUT_FILE, output_prefix("A_0900", 0.0))
            assert kept["end"] == out["end"] and kept["lines"][out["offset"] :] == out["lines"]
        finally:
            small.close()
        assert small.wait_closed() and small.read_output(0)["alive"] is False
        with pytest.raises(AnalysisError, match="closed"):
            small.submit("acc")


def test_a_package_that_fails_to_load_reports_why(trained, tmp_path):
    package, scripts = trained
    with isolated_imports():
        broken = make(tmp_path / "not-a-package", scripts, "A_0901", capture=False)
        try:
            state = broken.ready(30)
            assert state["loaded"] and "PackageError" in state["error"]
            done = wait_done(broken, broken.submit("acc")["job"])
            assert done["state"] == "FAILED" and "did not load" in done["error"]
        finally:
            broken.close()
    del package
