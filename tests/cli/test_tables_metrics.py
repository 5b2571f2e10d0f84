"""Latest metrics in task rows: a started training task shows its package's last metrics row in the
``latest`` column of ``tasks`` (and ``latest_metrics`` in ``tasks --json``); anything else — pending
tasks, analyzers, packages without (readable) metrics — shows nothing and never fails."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray import SavePackage
from dlnest_ray.cli import queue
from dlnest_ray.cli.tables import latest_metrics_text, task_latest_metrics, tasks_table, with_latest_metrics
from dlnest_ray.records import CenterState
from dlnest_ray.runtime.trainer import TrainOptions, train
from dlnest_ray.savepack.metrics import METRICS_FILE, MetricsLog, latest_metrics, read_metrics
from dlnest_ray.tasks import TaskRecord
from tests.projects import isolated_imports, write_project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package trained for 2 epochs on CPU (its metrics.parquet has rows for epochs 0 and 1)."""
    folder = tmp_path_factory.mktemp("trained")
    with isolated_imports():
        pkg = SavePackage(write_project(folder / "proj", epochs=2)).save_to_new_dir()
        train(pkg, TrainOptions(cpu=True, capture_output=False))
    return pkg


def task(package: Path | str, status: str = "RUNNING", **changes: Any) -> dict[str, Any]:
    now = time.time()
    started = None if status == "PENDING" else now - 5
    ended = now if status in ("SUCCEEDED", "FAILED", "CANCELLED") else None
    base = {
        "task_id": "T_0001",
        "kind": "T",
        "status": status,
        "package": str(package),
        "placement": "cpu",
        "submitted_at": now - 10,
        "started_at": started,
        "ended_at": ended,
        "description": "",
        "mb_per_gpu": 0,
    }
    return base | changes


def render(tasks: list[dict[str, Any]]) -> str:
    from rich.console import Console

    out = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - only recorded
    out.print(tasks_table(tasks, title="Tasks"))
    return out.export_text()


def expected_text(row: dict[str, Any]) -> str:
    shown = [
        k
        for k, v in row.items()
        if k not in ("epoch", "step", "wall_time") and not k.endswith(".last") and v is not None
    ][:3]
    return " ".join([f"ep {row['epoch']}", *(f"{k} {row[k]:.4g}" for k in shown)])


@pytest.mark.parametrize("status", ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"])
def test_started_task_row_shows_the_last_epoch(trained, status):
    last = read_metrics(trained).to_pylist()[-1]
    assert last["epoch"] == 1
    text = render([task(trained, status)])
    want = expected_text(last)
    assert want.startswith("ep 1 loss ") and "acc " in want
    assert want in text, text


def test_json_rows_carry_the_whole_last_row(trained):
    last = read_metrics(trained).to_pylist()[-1]
    running, pending = task(trained), task(trained, "PENDING", task_id="T_0002")
    rows = with_latest_metrics([running, pending])
    assert rows[0] == running | {"latest_metrics": last}
    assert rows[1] == pending | {"latest_metrics": None}
    json.loads(json.dumps(rows, allow_nan=False))  # strict JSON values


def test_json_has_no_nan(tmp_path):
    MetricsLog(tmp_path).append(epoch=0, step=1, wall_time=1.0, log={"loss": math.nan, "acc": 0.5})
    (row,) = with_latest_metrics([task(tmp_path)])
    assert row["latest_metrics"] == {"epoch": 0, "step": 1, "wall_time": 1.0, "loss": None, "acc": 0.5}


def test_tasks_command_json_and_table(trained, monkeypatch, capsys):
    rows = [task(trained), task(trained, "PENDING", task_id="T_0002")]

    class Client:
        draining = False

        def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
            return [TaskRecord.from_json({"kind": "T", **r}) for r in rows]

        def task_rows(self, include_finished: bool = False) -> list[dict[str, Any]]:
            from dlnest_ray.actors.task_rows import rows_with_metrics  # what the center answers

            return rows_with_metrics(self.get_task_info(include_finished))

        def center_state(self) -> CenterState:
            return CenterState(draining=self.draining, authenticated=True)

    client = Client()
    monkeypatch.setattr(queue, "connect_client", lambda address, create: client)
    queue.tasks(all_=True, as_json=True, address=None)
    out = json.loads(capsys.readouterr().out)
    assert out[0]["latest_metrics"]["epoch"] == 1 and out[1]["latest_metrics"] is None
    queue.tasks(all_=True, as_json=False, address=None)
    table = capsys.readouterr().out
    assert "latest" in table and expected_text(read_metrics(trained).to_pylist()[-1]) in table
    assert "going down" not in table
    client.draining = True  # `down` has begun: the table says nothing new starts
    queue.tasks(all_=True, as_json=False, address=None)
    assert capsys.readouterr().out.startswith("dlnest-ray is going down (`down` has begun)")
    queue.tasks(all_=True, as_json=True, address=None)  # --json stays exactly the rows
    assert json.loads(capsys.readouterr().out)[0]["task_id"] == "T_0001"


def test_tasks_without_metrics_show_nothing(tmp_path, trained):
    import pyarrow as pa
    import pyarrow.parquet as pq

    untrained = tmp_path / "untrained"
    untrained.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / METRICS_FILE).write_bytes(b"PAR1 not really parquet")
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"epoch": pa.array([], pa.int64())}), empty / METRICS_FILE)  # no rows
    tasks = [
        task(untrained, task_id="T_0001"),
        task(tmp_path / "gone", "SUCCEEDED", task_id="T_0002"),
        task(corrupt, "FAILED", task_id="T_0003"),
        task(empty, task_id="T_0004"),
        task(trained, "PENDING", task_id="T_0005"),  # a queued continue: not the previous run's numbers
        task(trained, "CANCELLED", task_id="T_0006", started_at=None),  # deleted while pending
        task(trained, "RUNNING", task_id="A_0007", kind="A"),  # an analyzer
        task("", "RUNNING", task_id="T_0008"),
    ]
    for t in tasks:
        assert task_latest_metrics(t) is None, t["task_id"]
    text = render(tasks)
    assert "ep " not in text
    assert all(t["task_id"] in text for t in tasks)


def test_latest_metrics_follows_a_rewritten_file(tmp_path):
    log = MetricsLog(tmp_path)
    log.append(epoch=0, step=4, wall_time=1.0, log={"loss": [0.5]})
    assert latest_metrics(tmp_path) == {"epoch": 0, "step": 4, "wall_time": 1.0, "loss": 0.5}
    log.append(epoch=1, step=8, wall_time=2.0, log={"loss": [0.5, 0.25], "acc": 0.9})
    assert latest_metrics(tmp_path / METRICS_FILE) == {
        "epoch": 1,
        "step": 8,
        "wall_time": 2.0,
        "loss": 0.25,
        "acc": 0.9,
    }
    latest = latest_metrics(tmp_path)
    assert latest is not None
    latest["loss"] = 99.0  # a caller's copy: the cached row is not changed
    assert latest_metrics(tmp_path)["loss"] == 0.25  # type: ignore[index]


def test_latest_text():
    row = {"epoch": 3, "step": 90, "wall_time": 1.0, "loss": 0.0712345, "lr": None, "acc": 0.98213}
    assert latest_metrics_text(row) == "ep 3 loss 0.07123 acc 0.9821"
    row |= {"val_loss": math.nan, "f1": 12345678.0, "n": 7}
    assert latest_metrics_text(row) == "ep 3 loss 0.07123 acc 0.9821 val_loss nan"
    assert latest_metrics_text(row, keys=5) == "ep 3 loss 0.07123 acc 0.9821 val_loss nan f1 1.235e+07 n 7"
    assert latest_metrics_text(None) == "" == latest_metrics_text({})
    assert latest_metrics_text({"epoch": 0, "step": 1, "wall_time": 2.0}) == "ep 0"
    # an epoch mean's companion (the last step's value) is left out: the mean speaks for the key
    row = {"epoch": 1, "loss": 0.5, "loss.last": 0.25, "acc": 0.9, "x.last": 3.0}
    assert latest_metrics_text(row) == "ep 1 loss 0.5 acc 0.9 x.last 3"


def test_user_text_is_not_markup(tmp_path):
    MetricsLog(tmp_path).append(epoch=0, step=1, wall_time=1.0, log={"[bold]x": 1.5})
    error, desc = "KeyError: '[model]' [/]", "lr [red]"
    failed = task(tmp_path, "FAILED", task_id="T_0002", error=error, description=desc)
    text = render([task(tmp_path), failed])
    assert "ep 0 [bold]x 1.5" in text
    assert "KeyError: '[model]' [/]" in text and "lr [red]" in text


def test_importing_the_tables_imports_no_pyarrow():
    code = "import sys, dlnest_ray.cli.tables, dlnest_ray.cli.queue; print('pyarrow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_the_shell_task_pane_shows_the_latest_metrics(trained):
    from dlnest_ray.cli.shell.panes import tasks_fragments

    last = read_metrics(trained).to_pylist()[-1]
    text = "".join(t for _, t in tasks_fragments([task(trained, "RUNNING")], 250))
    assert expected_text(last) in text, text
    failed = "".join(t for _, t in tasks_fragments([task(trained, "FAILED", error="boom")], 250))
    assert "boom" in failed and "ep 1" not in failed  # the error wins over the numbers
