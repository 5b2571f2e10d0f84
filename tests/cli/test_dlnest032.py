"""A DLNest 0.3.2-style MNIST project (tests/dlnest_projects.py: runner names, camelCase hooks,
three-step validation, all four plugins, giveResultValues, `epoch >= epochs`) trained with `train`,
resumed and analyzed, with only its imports changed from DLNest code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dlnest_ray import SavePackage
from dlnest_ray.savepack.metrics import read_metrics
from tests.dlnest_projects import DLNEST_IMPORTS, write_dlnest032_mnist
from tests.smtp_server import SmtpServer

from .helpers import package_from, run_cli

pytestmark = pytest.mark.slow


def test_only_the_imports_differ_from_dlnest_code(tmp_path: Path, mnist_dir: Path) -> None:
    write_dlnest032_mnist(tmp_path / "p", data_root=mnist_dir)
    for path in (tmp_path / "p").rglob("*.py"):
        for line in path.read_text().splitlines():
            if "dlnest_ray" in line:
                assert line.strip() in DLNEST_IMPORTS, (path.name, line)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("dlnest032")
    with SmtpServer() as smtp:
        cfg = write_dlnest032_mnist(
            folder / "mnist", data_root=mnist_dir, epochs=1, smtp_port=smtp.port, extra={"seed": 7}
        )
        env = {"DLNEST_MAIL_PASSWORD": "from-the-environment"}
        first = run_cli("train", cfg, "--cpu", "-d", "dlnest032", cwd=folder, env=env)
        assert first.returncode == 0, str(first)
        package = package_from(first)
        resumed = run_cli("train", "--resume", package, "--cpu", cwd=folder, env=env)
        assert resumed.returncode == 0, str(resumed)
        mails = list(smtp.mails)
    return {"cfg": cfg, "package": package, "first": first, "resumed": resumed, "mails": mails}


def test_epochs_follow_the_users_own_rule_and_say_so(trained: dict) -> None:
    # `epoch >= args["epochs"]` with epochs 1: epochs 0 and 1, as DLNest ran it; the line says 2
    assert "finished epoch 1 (2 epochs in all," in trained["first"].stdout
    assert "finished epoch 2 (3 epochs in all," in trained["resumed"].stdout
    assert [r["epoch"] for r in read_metrics(trained["package"]).to_pylist()] == [0, 1, 2]


def test_three_step_validation_and_the_life_cycle_state(trained: dict) -> None:
    state = SavePackage.open(trained["package"]).state_dict()
    acc = state["log_dict"]["acc"]
    assert len(acc) == 3 and acc[-1] > 0.2  # it learns (chance is 0.1; a few steps of a small subset)
    assert state["life_cycle"]["max_acc"] == max(state["log_dict"]["acc"])
    assert list(state["runner"]["modules"]) == ["model", "cost"]


def test_plugins_log_init_and_simple_cmd_visualize(trained: dict) -> None:
    out = (trained["package"] / "_output.txt").read_text()
    # LogInit's format, and the life cycle's logging.info with DLNest's RunningStatus API
    assert re.search(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]\[INFO\] world size 1, env CPU, training", out, re.M
    )
    # SimpleCMDVisualize every 4 steps, in the configured format (512 images / 64 = 8 steps per epoch)
    lines = [ln for ln in out.splitlines() if ln.startswith("Iter : ")]
    assert len(lines) == 3 * 2
    assert re.fullmatch(
        r"Iter : 0\t\| loss : \d+\.\d{6}\t\| acc : -", lines[0]
    )  # no acc before the first validation
    assert re.fullmatch(r"Iter : 4\t\| loss : \d+\.\d{6}\t\| acc : \d\.\d{6}", lines[3])
    assert "task args epochs: 1 finished: 0" in out  # the taskProcess view


def test_plugins_auto_tensorboard_scalar(trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained["package"] / "tb" / "steps"))
    acc.Reload()
    losses = acc.Scalars("loss")
    assert [e.step for e in losses] == list(
        range(3 * 8)
    )  # every value, stepped by its index, resume included
    log = SavePackage.open(trained["package"]).state_dict()["log_dict"]
    assert [e.value for e in losses] == pytest.approx(log["loss"], rel=1e-6)
    assert [e.step for e in acc.Scalars("acc")] == [0, 1, 2]


def test_mails_note_reports_the_results_over_smtp(trained: dict) -> None:
    mails = trained["mails"]
    assert [m.subject for m in mails] == ["Train Finished!", "Train Finished!"]
    for mail in mails:
        assert mail.recipients == ["me@example.org"]
        assert mail.login == ("me@example.org", "from-the-environment")  # the password came from the env
        assert "The final results are:" in mail.body and "| acc : " in mail.body
    args = json.loads((trained["package"] / "args.json").read_text())
    assert "from-the-environment" not in json.dumps(args)


def test_the_package_analyzes_with_the_dlnest_script(trained: dict) -> None:
    got = run_cli("analyze", trained["package"], "--script", "getAcc", "--cpu")
    assert got.returncode == 0, str(got)
    acc = float(re.search(r"Accuracy: ([0-9.]+)", got.stdout).group(1))  # type: ignore[union-attr]
    assert acc == pytest.approx(SavePackage.open(trained["package"]).state_dict()["log_dict"]["acc"][-1])


def test_a_failed_run_mails_aborting_and_a_dead_server_fails_nothing(tmp_path: Path, mnist_dir: Path) -> None:
    with SmtpServer() as smtp:
        cfg = write_dlnest032_mnist(tmp_path / "m", data_root=mnist_dir, smtp_port=smtp.port, n_train=128)
        (tmp_path / "bad.json").write_text(json.dumps({"model_config": {"lr": "not a number"}}))
        failed = run_cli("train", cfg, "-f", tmp_path / "bad.json", "--cpu", cwd=tmp_path)
        assert failed.returncode == 1, str(failed)
        assert [m.subject for m in smtp.mails] == ["Train Aborted!"]
        assert "TypeError" in smtp.mails[0].body
    port = smtp.port  # closed now: nothing listens there
    cfg2 = write_dlnest032_mnist(tmp_path / "n", data_root=mnist_dir, smtp_port=port, n_train=128, epochs=0)
    ok = run_cli("train", cfg2, "--cpu", cwd=tmp_path)
    assert ok.returncode == 0, str(ok)  # the mail could not be sent: said, and the run still succeeded
    out = (package_from(ok) / "_output.txt").read_text()
    assert "MailsNote could not send 'Train Finished!'" in out
