"""Word when a task ends (issue 14, item 4), on an in-process center with fakes: a webhook on 127.0.0.1
gets the JSON of SUCCEEDED, FAILED and CANCELLED tasks; failures are retried, then logged once, and
never hold up the center; e-mail through the local SMTP server; bad URLs are one line; the secrets stay
out of ``center.json``, ``tasks --json`` and the log."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.actors.center import Center
from dlnest_ray.actors.notify import Notifier
from dlnest_ray.actors.ports import FakeLauncher
from dlnest_ray.errors import DlnestError
from dlnest_ray.savepack import layout
from dlnest_ray.savepack.metrics import MetricsLog
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.tasks import TaskRecord
from tests.projects import write_project
from tests.smtp_server import SmtpServer
from tests.webhook_server import WebhookServer, closed_port

from ._helpers import info


def fast(center: Center, tries: int = 3) -> Center:
    """The center with a notifier that retries quickly (the shipped one waits 1, 2, 4, 8 s)."""
    center.notifier = Notifier(on_failure=center.log.write, tries=tries, first_delay_s=0.05)
    return center


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


def project_with(tmp_path: Path, notify: dict[str, Any] | None, name: str = "mnist") -> Path:
    return write_project(tmp_path / name, extra={"notify": notify} if notify is not None else None)


def log_lines(center: Center) -> list[str]:
    return list(center.get_dlnest_output(0)["lines"])


def notify_lines(center: Center) -> list[str]:
    return [line for line in log_lines(center) if "notify:" in line]


def test_succeeded_failed_and_cancelled_reach_the_webhook(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer
) -> None:
    center = fast(make_center())
    config = project_with(tmp_path, {"webhook": hook.url})
    ok = center.run_train(str(config), memory_mb=9000)
    bad = center.run_train(str(config), memory_mb=9000)
    waiting = center.run_train(str(config), memory_mb=9000)  # no room: stays pending
    assert info(center, waiting)["status"] == "PENDING"
    package = Path(info(center, ok)["package"])
    MetricsLog(package).append(epoch=2, step=12, wall_time=time.time(), log={"acc": 0.991, "loss": 0.05})
    assert center.notifier.idle(5) and hook.hits == 0  # queued and launched: no word
    center.del_task(waiting)
    center.task_finished(ok, "SUCCEEDED")
    center.task_finished(bad, "FAILED", error="ValueError: boom\n  at line 3")
    bodies = {b["task_id"]: b for b in hook.wait_for(3)}
    assert set(bodies) == {ok, bad, waiting}
    assert bodies[ok] == {
        "task_id": ok,
        "status": "SUCCEEDED",
        "reason": "",
        "error": "",
        "package": str(package),
        "latest_metrics": bodies[ok]["latest_metrics"],
        "attempt": 1,
        "text": f"{ok} SUCCEEDED: mnist ({package.name}) — acc 0.991 loss 0.05",
    }
    assert {k: bodies[ok]["latest_metrics"][k] for k in ("epoch", "step", "acc", "loss")} == {
        "epoch": 2,
        "step": 12,
        "acc": 0.991,
        "loss": 0.05,
    }
    assert bodies[bad]["status"] == "FAILED" and bodies[bad]["reason"] == "ValueError: boom"
    assert bodies[bad]["error"] == "ValueError: boom\n  at line 3"
    assert bodies[bad]["text"].endswith("— ValueError: boom") and bodies[bad]["latest_metrics"] == {}
    assert bodies[waiting]["status"] == "CANCELLED" and bodies[waiting]["reason"] == "deleted while pending"
    center.task_finished(ok, "SUCCEEDED")  # a duplicate report: no second notice
    assert center.notifier.idle(5) and hook.hits == 3
    assert notify_lines(center) == []


def test_the_cluster_default_is_used_unless_the_run_has_its_own(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer
) -> None:
    center = fast(make_center())
    plain = center.run_train(str(project_with(tmp_path, None, "plain")), memory_mb=1000)
    center.task_finished(plain, "SUCCEEDED")  # no webhook anywhere yet: nothing sent, nothing logged
    assert center.notifier.idle(5) and hook.hits == 0
    center.change_notify_webhook(hook.url)
    with WebhookServer() as own:
        mine = center.run_train(str(project_with(tmp_path, {"webhook": own.url}, "mine")), memory_mb=1000)
        other = center.run_train(str(project_with(tmp_path, None, "other")), memory_mb=1000)
        center.task_finished(mine, "SUCCEEDED")
        center.task_finished(other, "SUCCEEDED")
        assert [b["task_id"] for b in own.wait_for(1)] == [mine]
        assert [b["task_id"] for b in hook.wait_for(1)] == [other]
        assert center.notifier.idle(5) and own.hits == 1 and hook.hits == 1
    center.change_notify_webhook("")
    last = center.run_train(str(project_with(tmp_path, None, "last")), memory_mb=1000)
    center.task_finished(last, "SUCCEEDED")
    assert center.notifier.idle(5) and hook.hits == 1


def test_a_webhook_answering_500_twice_is_retried_and_delivered(
    make_center: Callable[..., Center], tmp_path: Path
) -> None:
    center = fast(make_center())
    with WebhookServer(statuses=[500, 500]) as hook:
        task = center.run_train(str(project_with(tmp_path, {"webhook": hook.url})), memory_mb=1000)
        center.task_finished(task, "SUCCEEDED")
        assert [b["task_id"] for b in hook.wait_for(1)] == [task]
        assert center.notifier.idle(5) and hook.hits == 3
    assert notify_lines(center) == []


def test_a_dead_webhook_is_one_log_line_and_the_center_goes_on(
    make_center: Callable[..., Center], tmp_path: Path
) -> None:
    center = fast(make_center())
    dead = f"http://127.0.0.1:{closed_port()}/hooks/SECRET"
    config = project_with(tmp_path, {"webhook": dead})
    task = center.run_train(str(config), memory_mb=1000)
    center.task_finished(task, "FAILED", error="boom")
    after = center.run_train(str(config), memory_mb=1000)  # the center works on meanwhile
    assert info(center, after)["status"] == "RUNNING"
    assert center.notifier.idle(10)
    lines = notify_lines(center)
    assert len(lines) == 1, lines
    assert f"notify: webhook for {task} failed after 3 tries: URLError: " in lines[0]
    assert "Connection refused" in lines[0]
    assert "SECRET" not in "\n".join(log_lines(center))


def test_a_slow_webhook_never_holds_up_the_center(make_center: Callable[..., Center], tmp_path: Path) -> None:
    center = fast(make_center())
    with WebhookServer(delay_s=1.5) as hook:
        config = project_with(tmp_path, {"webhook": hook.url})
        first = center.run_train(str(config), memory_mb=1000)
        started = time.monotonic()
        center.task_finished(first, "SUCCEEDED")
        assert time.monotonic() - started < 0.5
        second = center.run_train(str(config), memory_mb=1000)  # submit and finish right after
        started = time.monotonic()
        center.task_finished(second, "SUCCEEDED")
        assert time.monotonic() - started < 0.5
        assert info(center, second)["status"] == "SUCCEEDED"
        assert hook.bodies == []  # the first answer is still on its way
        assert [b["task_id"] for b in hook.wait_for(2)] == [first, second]


def test_email_goes_through_the_local_smtp_server(
    make_center: Callable[..., Center], tmp_path: Path, home: Path
) -> None:
    center = fast(make_center())
    with SmtpServer() as smtp:
        email = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "username": "me",
            "password_env": "MY_PW",
            "to": "me@lab",
        }
        config = project_with(tmp_path, {"email": email})
        task = center.run_train(str(config), memory_mb=1000, env={"MY_PW": "s3cret-pw"})
        private = home / "notify" / f"{task}.json"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert "s3cret-pw" not in (home / "center.json").read_text()
        center.task_finished(task, "FAILED", error="RuntimeError: out of data")
        assert center.notifier.idle(10)
        [mail] = smtp.mails
    assert mail.subject == f"dlnest-ray: {task} FAILED" and mail.recipients == ["me@lab"]
    assert mail.login == ("me", "s3cret-pw")  # the submitter's password, not the center's environment
    assert f"{task} FAILED: mnist" in mail.body and "RuntimeError: out of data" in mail.body
    assert not private.exists()  # handed to the notifier: the secret is gone from disk
    assert notify_lines(center) == []


def test_secrets_stay_out_of_center_json_tasks_and_the_log(
    make_center: Callable[..., Center], tmp_path: Path, home: Path
) -> None:
    center = make_center()
    cluster = "https://hooks.slack.com/services/T0/B0/CLUSTERSECRET"
    center.change_notify_webhook(cluster)
    own = "https://hooks.example.org/RUNSECRET"
    email = {"to": "me@lab", "username": "me", "password_env": "MY_PW"}
    task = center.run_train(
        str(project_with(tmp_path, {"webhook": own, "email": email})),
        memory_mb=16000,
        env={"MY_PW": "MAILSECRET"},
    )
    assert json.loads((home / "notify" / f"{task}.json").read_text())["webhook"] == own
    shown = [
        (home / "center.json").read_text(),
        json.dumps([t.to_row() for t in center.get_task_info(include_finished=True)]),
        json.dumps(center.get_settings().to_json()),
        "\n".join(log_lines(center)),
    ]
    for text in shown:
        for secret in ("CLUSTERSECRET", "RUNSECRET", "MAILSECRET"):
            assert secret not in text
    assert center.get_settings().notify_webhook == "https://hooks.slack.com/…"
    assert any(line.endswith("notify webhook: https://hooks.slack.com/…") for line in log_lines(center))


def test_bad_urls_are_one_line_and_change_nothing(
    make_center: Callable[..., Center], tmp_path: Path, home: Path
) -> None:
    center = make_center()
    with pytest.raises(DlnestError) as info_:
        center.change_notify_webhook("ftp://x")
    assert (
        str(info_.value) == "the notify webhook must be an http(s) URL like https://host/path (scheme 'ftp')"
    )
    assert center.get_settings().notify_webhook == ""
    config = project_with(tmp_path, {"webhook": "ftp://hooks/x"})
    with pytest.raises(DlnestError) as info_:
        center.run_train(str(config), memory_mb=1000)
    assert str(info_.value).startswith("notify.webhook must be an http(s) URL") and "\n" not in str(
        info_.value
    )
    with pytest.raises(DlnestError, match=r"^notify.email.port must be an integer"):
        center.run_train(
            str(project_with(tmp_path, {"email": {"to": "a@b", "port": "x"}}, "p2")), memory_mb=1000
        )
    assert center.get_task_info(include_finished=True) == []  # nothing queued, no package made
    assert not (tmp_path / "mnist" / "Saves").exists()


def test_continue_checks_the_packages_notify_and_uses_it(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer
) -> None:
    center = fast(make_center())
    first = center.run_train(str(project_with(tmp_path, {"webhook": hook.url})), memory_mb=1000)
    package = info(center, first)["package"]
    MetricsLog(Path(package)).append(epoch=0, step=4, wall_time=time.time(), log={"acc": 0.5})
    SavePackage.open(package).save_checkpoint({"step": 0}, epoch=0)
    center.task_finished(first, "SUCCEEDED")
    args_file = layout.args_path(Path(package))
    later = center.continue_train(package, memory_mb=1000)
    center.task_finished(later, "SUCCEEDED")
    assert [b["task_id"] for b in hook.wait_for(2)] == [first, later]
    args = json.loads(args_file.read_text())
    args["notify"] = {"webhook": "mailto:me@lab"}
    args_file.write_text(json.dumps(args))
    with pytest.raises(DlnestError, match=r"notify\.webhook must be an http"):
        center.continue_train(package, memory_mb=1000)


def test_a_pending_tasks_settings_survive_a_center_restart(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer, home: Path
) -> None:
    center = make_center()
    other = str(project_with(tmp_path, None, "other"))
    for _ in range(2):  # both GPUs taken: the next one waits
        center.run_train(other, memory_mb=16000)
    task = center.run_train(str(project_with(tmp_path, {"webhook": hook.url})), memory_mb=16000)
    assert info(center, task)["status"] == "PENDING"
    del center
    again = fast(make_center())
    assert again.del_task(task) == f"{task} removed from the queue"
    assert [b["task_id"] for b in hook.wait_for(1)] == [task]
    assert again.notifier.idle(5) and hook.hits == 1
    assert not list((home / "notify").glob("T_*.json"))


def test_an_idle_center_holds_no_notifier_thread(make_center: Callable[..., Center], tmp_path: Path) -> None:
    import threading

    centers = [make_center() for _ in range(5)]
    task = centers[-1].run_train(str(project_with(tmp_path, None)), memory_mb=1000)
    centers[-1].task_finished(task, "SUCCEEDED")  # nowhere to send: no thread either
    assert not [t for t in threading.enumerate() if t.name == "dlnest-notify"]
    centers[-1].close(1.0)


def test_a_launch_that_fails_is_word_of_a_failure(
    make_center: Callable[..., Center], tmp_path: Path, hook: WebhookServer
) -> None:
    class Broken(FakeLauncher):
        def launch(self, record: TaskRecord, env: Mapping[str, str]) -> None:
            raise RuntimeError("no supervisor")

    center = fast(make_center(launcher=Broken()))
    task = center.run_train(str(project_with(tmp_path, {"webhook": hook.url})), memory_mb=1000)
    [body] = hook.wait_for(1)
    assert (body["task_id"], body["status"]) == (task, "FAILED")
    assert body["reason"] == "launch failed: no supervisor"
