"""The center's log buffer (offsets, wrap-around, clear) and its messages; the state store."""

from __future__ import annotations

from pathlib import Path

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.store import CenterStore, LogBuffer, default_home
from dlnest_ray.tasks import TaskKind, TaskRecord, TaskStatus

from ._helpers import info


def _text(lines: list[str]) -> list[str]:
    """Lines without their ``[timestamp] `` prefix."""
    return [line.split("] ", 1)[1] for line in lines]


def test_offsets_are_monotonic():
    buf = LogBuffer()
    assert buf.read(0) == {"offset": 0, "end": 0, "missed": 0, "lines": []}
    buf.write("one")
    buf.write("two\nthree")  # one line each
    r = buf.read(0)
    assert (r["offset"], r["end"], r["missed"]) == (0, 3, 0)
    assert _text(r["lines"]) == ["one", "two", "three"]
    r2 = buf.read(r["end"])
    assert r2["lines"] == [] and r2["end"] == 3
    buf.write("four")
    r3 = buf.read(r["end"])
    assert (r3["offset"], r3["end"]) == (3, 4)
    assert _text(r3["lines"]) == ["four"]
    assert _text(buf.read(1)["lines"]) == ["two", "three", "four"]


def test_reading_after_wrap_reports_missed():
    buf = LogBuffer(max_lines=3)
    for i in range(5):
        buf.write(f"m{i}")
    r = buf.read(0)
    assert r["missed"] == 2
    assert r["offset"] == 2 and r["end"] == 5
    assert _text(r["lines"]) == ["m2", "m3", "m4"]
    r = buf.read(1)
    assert r["missed"] == 1 and _text(r["lines"]) == ["m2", "m3", "m4"]
    r = buf.read(3)
    assert r["missed"] == 0 and _text(r["lines"]) == ["m3", "m4"]
    # a reader following ``end`` never misses anything while it keeps up
    end = r["end"]
    buf.write("m5")
    r = buf.read(end)
    assert r["missed"] == 0 and _text(r["lines"]) == ["m5"]


def test_clear_keeps_offsets_growing():
    buf = LogBuffer()
    buf.write("a")
    buf.write("b")
    buf.clear()
    r = buf.read(2)
    assert r["lines"] == [] and r["end"] == 2 and r["missed"] == 0
    buf.write("c")
    r = buf.read(2)
    assert (r["offset"], r["end"]) == (2, 3)
    assert _text(r["lines"]) == ["c"]
    assert _text(buf.read(0)["lines"]) == ["c"]


def test_log_is_appended_to_a_file_and_clear_moves_it_aside(tmp_path: Path):
    path = tmp_path / "center.log"
    buf = LogBuffer(path, max_lines=1)
    buf.write("x")
    buf.write("y\nz")
    assert _text(path.read_text().splitlines()) == ["x", "y", "z"]
    buf.clear()
    assert not path.exists()  # cleared: a restarted center does not bring the lines back ...
    assert _text((tmp_path / "center.log.1").read_text().splitlines()) == ["x", "y", "z"]  # ... kept here
    buf.write("w")
    assert _text(path.read_text().splitlines()) == ["w"]
    assert _text(LogBuffer(path).read(0)["lines"]) == ["w"]


def test_a_new_log_buffer_starts_with_the_files_last_lines(tmp_path: Path):
    path = tmp_path / "center.log"
    first = LogBuffer(path)
    for i in range(50):
        first.write(f"m{i}")
    again = LogBuffer(path, max_lines=10)  # a restarted center, or the next `up`
    r = again.read(0)
    assert _text(r["lines"]) == [f"m{i}" for i in range(40, 50)]
    again.write("after")
    assert _text(again.read(r["end"])["lines"]) == ["after"]
    assert path.read_text().count("\n") == 51  # preloaded lines are not written twice


def test_tail_lines_reads_across_blocks(tmp_path: Path):
    from dlnest_ray.actors.store import tail_lines

    path = tmp_path / "f"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail_lines(path, 3, block=7) == ["line 997", "line 998", "line 999"]
    assert tail_lines(path, 2000, block=64) == [f"line {i}" for i in range(1000)]
    assert tail_lines(tmp_path / "missing", 5) == []


def test_center_output_shows_queued_and_launched(center: Center, home: Path, project: Path):
    a = center.run_train(str(project), memory_mb=6000)
    b = center.run_train(str(project), placement="cpu")
    out = center.get_dlnest_output(0)
    text = "\n".join(out["lines"])
    assert f"{a} queued" in text and f"{b} queued" in text
    assert f"{a} launched on node-0 GPU 0 (6000 MB each)" in text
    assert f"{b} launched on CPU" in text
    # reading from the end gives only new messages
    end = out["end"]
    center.del_task(a)
    center.task_finished(a, "FAILED")
    new = center.get_dlnest_output(end)
    assert new["offset"] == end and new["missed"] == 0
    assert any(a in line and "cancelling" in line for line in new["lines"])
    assert any(a in line and "CANCELLED" in line for line in new["lines"])
    assert all(f"{b} queued" not in line for line in new["lines"])
    # also written to <home>/center.log
    assert f"{a} queued" in (home / "center.log").read_text()


def test_center_clear(center: Center, project: Path):
    center.run_train(str(project), placement="cpu")
    end = center.get_dlnest_output()["end"]
    assert end > 0
    center.clear()
    r = center.get_dlnest_output(end)
    assert r["lines"] == [] and r["end"] == end
    t = center.run_train(str(project), placement="cpu")
    assert any(f"{t} queued" in line for line in center.get_dlnest_output(end)["lines"])


def test_waiting_task_is_logged_not_launched(center: Center, project: Path):
    ids = [center.run_train(str(project), memory_mb=16000) for _ in range(3)]
    text = "\n".join(center.get_dlnest_output()["lines"])
    assert f"{ids[2]} queued" in text
    assert f"{ids[2]} launched" not in text
    assert info(center, ids[2])["status"] == "PENDING"


def test_store_round_trip(tmp_path: Path):
    store = CenterStore(tmp_path / "h")
    assert store.tasks == {} and store.next_id == 1
    assert (store.new_id(TaskKind.TRAIN), store.new_id(TaskKind.ANALYZE)) == ("T_0001", "A_0002")
    rec = TaskRecord(task_id="T_0001", package="/p", submitted_at=1.0, status=TaskStatus.RUNNING, gpus=(1,))
    store.tasks[rec.task_id] = rec
    store.settings.disabled = ["n:gpu0"]
    store.save()
    again = CenterStore(tmp_path / "h")
    assert again.tasks == {"T_0001": rec}
    assert again.next_id == 3
    assert again.settings.disabled == ["n:gpu0"]


def test_default_home_from_env(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("DLNEST_RAY_HOME", str(tmp_path / "somewhere"))
    assert default_home() == (tmp_path / "somewhere").resolve()


def test_sweeps_are_stored_with_their_own_counter_and_an_old_file_without_them_loads(tmp_path: Path):
    import json

    from dlnest_ray.sweeps.records import SweepRecord, SweepTrial

    store = CenterStore(tmp_path)
    assert store.new_id(TaskKind.TRAIN) == "T_0001"
    sweep_id = store.new_sweep_id()
    assert sweep_id == "S_0001"  # counted apart from tasks
    trial = SweepTrial(task_id="T_0001", values={"lr": 0.1}, label="lr=0.1", package="/p")
    store.sweeps[sweep_id] = SweepRecord(sweep_id=sweep_id, config_path="/c", trials=(trial,), created_at=1.0)
    store.save()
    again = CenterStore(tmp_path)
    assert again.sweeps == store.sweeps and again.new_sweep_id() == "S_0002"
    raw = json.loads((tmp_path / "center.json").read_text())
    del raw["sweeps"], raw["next_sweep_id"]  # a state file from before sweeps
    (tmp_path / "center.json").write_text(json.dumps(raw))
    old = CenterStore(tmp_path)
    assert old.sweeps == {} and old.new_sweep_id() == "S_0001" and old.next_id == 2
