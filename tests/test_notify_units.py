"""Notifications without a center (issue 14, item 4): checking the ``notify`` settings, the notice's JSON
body and Slack text, the store's private files, and the :class:`Notifier`'s retries, backoff, failure
line and bounded close; ``config --notify-webhook`` refusing a bad URL before it connects."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.actors.notify import (
    Notice,
    Notifier,
    NotifySettings,
    NotifyStore,
    check_webhook,
    parse_notify,
    post_json,
    redact_url,
)
from dlnest_ray.cli import queue
from dlnest_ray.cli.app import main
from dlnest_ray.errors import DlnestError
from dlnest_ray.records import SettingsInfo
from tests.webhook_server import WebhookServer, closed_port

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


# ------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "https://hooks.slack.com/services/a/b", " https://h "]
)
def test_http_and_https_urls_pass(url: str) -> None:
    assert check_webhook(url) == url.strip()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://x", "scheme 'ftp'"),
        ("hooks.slack.com/x", "no scheme"),
        ("http://", "scheme 'http'"),
        ("file:///etc/passwd", "scheme 'file'"),
        (3, "not int"),
    ],
)
def test_a_bad_webhook_is_one_line_naming_the_key(url: object, words: str) -> None:
    with pytest.raises(DlnestError) as info:
        check_webhook(url)
    message = str(info.value)
    assert message.startswith("notify.webhook must be an http(s) URL") and words in message
    assert "\n" not in message


def test_redacted_url_keeps_scheme_and_host_only() -> None:
    assert redact_url(HOOK) == "https://hooks.slack.com/…"
    assert redact_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert redact_url("http://h:9000/?token=1") == "http://h:9000/…"
    assert redact_url("") == ""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("https://x", "notify must be a dict"),
        ({"webhok": "https://x"}, "notify: unknown key 'webhok'"),
        ({"webhook": "ftp://x"}, "notify.webhook must be an http(s) URL"),
        ({"email": "me@lab"}, "notify.email must be a dict"),
        ({"email": {"to": "me@lab", "prot": 25}}, "notify.email: unknown key 'prot'"),
        ({"email": {"to": "me@lab", "port": "25"}}, "notify.email.port must be an integer"),
        ({"email": {"to": "me@lab", "port": 70000}}, "notify.email.port must be an integer"),
        ({"email": {"to": "me@lab", "ssl": "yes"}}, "notify.email.ssl must be true or false"),
        ({"email": {"to": "me@lab", "timeout_s": 0}}, "notify.email.timeout_s must be a positive"),
        ({"email": {"host": "smtp"}}, "notify.email.to must be an address"),
        ({"email": {"to": ["a@b", 3]}}, "notify.email.to must be an address"),
        ({"email": {"to": "a@b", "host": 1}}, "notify.email.host must be a string"),
    ],
)
def test_bad_notify_settings_are_one_line_naming_the_part(raw: object, message: str) -> None:
    with pytest.raises(DlnestError) as info:
        parse_notify(raw)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_notify_settings_take_the_password_from_the_submitters_environment() -> None:
    assert not parse_notify(None)
    s = parse_notify(
        {"webhook": HOOK, "email": {"to": "me@lab", "username": "me", "password_env": "MY_PW"}},
        {"MY_PW": "pw1"},
    )
    assert s.webhook == HOOK and s.email["password"] == "pw1" and s.email["to"] == "me@lab"
    assert (
        parse_notify({"email": {"username": "me"}}, {"DLNEST_MAIL_PASSWORD": "pw2"}).email["password"]
        == "pw2"
    )
    given = parse_notify({"email": {"username": "me", "password": "own"}}, {"DLNEST_MAIL_PASSWORD": "pw2"})
    assert given.email["password"] == "own"
    assert "pw1" not in repr(s) and HOOK not in repr(s)  # a repr in a traceback or log shows no secret


def test_the_store_keeps_private_files_and_drops_them(tmp_path: Path) -> None:
    store = NotifyStore(tmp_path)
    store.put("T_0001", NotifySettings())  # nothing to keep: no file
    assert not (tmp_path / "notify").exists()
    store.put("T_0001", NotifySettings(webhook=HOOK, email={"to": "a@b"}))
    path = tmp_path / "notify" / "T_0001.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "notify").stat().st_mode) == 0o700
    assert store.get("T_0001") == NotifySettings(webhook=HOOK, email={"to": "a@b"})
    store.drop("T_0001")
    store.drop("T_0001")  # twice: fine
    assert not path.exists() and store.get("T_0001") == NotifySettings()
    assert store.webhook == ""
    store.set_webhook(HOOK)
    assert NotifyStore(tmp_path).webhook == HOOK  # kept across a restart
    assert stat.S_IMODE((tmp_path / "notify" / "cluster.json").stat().st_mode) == 0o600
    store.set_webhook("")
    assert NotifyStore(tmp_path).webhook == ""


# ------------------------------------------------------------------------------------------- notices
def notice(**kw: Any) -> Notice:
    base: dict[str, Any] = {
        "task_id": "T_0003",
        "status": "SUCCEEDED",
        "package": "/p/Saves/2026-11-28_09-12-03_114",
        "name": "mnist",
        "latest_metrics": {"epoch": 4, "step": 80, "wall_time": 1.0, "acc": 0.991, "loss": 0.05},
        "webhook": "http://127.0.0.1:1/x",
    }
    base.update(kw)
    return Notice(**base)


def test_the_text_is_a_slack_one_liner() -> None:
    assert notice().text() == "T_0003 SUCCEEDED: mnist (2026-11-28_09-12-03_114) — acc 0.991 loss 0.05"
    failed = notice(status="FAILED", reason="ValueError: boom", attempt=3, latest_metrics={})
    assert failed.text() == "T_0003 FAILED: mnist (2026-11-28_09-12-03_114) [attempt 3] — ValueError: boom"
    metrics = {"loss": 0.5, "loss.last": 0.4, "acc": float("nan")}  # companions and NaNs left out
    assert notice(latest_metrics=metrics).text().endswith("— loss 0.5")


def test_the_payload_has_every_field_and_is_strict_json() -> None:
    body = notice(latest_metrics={"acc": float("nan"), "loss": 0.05}, error="x").payload()
    assert set(body) == {
        "task_id",
        "status",
        "reason",
        "error",
        "package",
        "latest_metrics",
        "attempt",
        "text",
    }
    assert body["latest_metrics"] == {"acc": None, "loss": 0.05} and body["attempt"] == 1
    json.dumps(body, allow_nan=False)
    assert "webhook" not in body  # the URL is where it goes, not what it says
    subject, text = notice(error="Traceback\nValueError: boom", reason="ValueError: boom").mail()
    assert subject == "dlnest-ray: T_0003 SUCCEEDED"
    assert "acc: 0.991" in text and "Traceback" in text and "package: /p/Saves/" in text


def test_post_json_raises_on_an_error_answer() -> None:
    with WebhookServer(statuses=[500]) as hook:
        with pytest.raises(OSError, match="500"):
            post_json(hook.url, {"a": 1}, 5.0)
        post_json(hook.url, {"a": 1}, 5.0)
        assert hook.bodies == [{"a": 1}] and hook.hits == 2


# ------------------------------------------------------------------------------------------- notifier
class Flaky:
    """A sender that fails ``failures`` times, then records."""

    def __init__(self, failures: int, delay_s: float = 0.0) -> None:
        self.failures, self.delay_s = failures, delay_s
        self.calls: list[float] = []
        self.sent: list[Any] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(time.monotonic())
        if self.delay_s:
            time.sleep(self.delay_s)
        if len(self.calls) <= self.failures:
            raise ConnectionError("refused")
        self.sent.append(args)


def test_a_failing_webhook_is_retried_with_backoff_then_delivered() -> None:
    post, lines = Flaky(2), list[str]()
    n = Notifier(on_failure=lines.append, tries=5, first_delay_s=0.1, post=post, metrics=lambda p: None)
    n.notify(notice())
    assert n.idle(5)
    assert len(post.calls) == 3 and len(post.sent) == 1 and lines == []
    gaps = [b - a for a, b in zip(post.calls, post.calls[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then twice as long
    url, body, timeout = post.sent[0]
    assert url == "http://127.0.0.1:1/x" and body["task_id"] == "T_0003" and timeout == 10.0


def test_after_the_last_try_one_line_and_the_url_is_not_in_it() -> None:
    secret = "http://127.0.0.1:1/hooks/SECRET"

    def post(url: str, body: Mapping[str, Any], timeout: float) -> None:
        raise ValueError(f"cannot reach {url}")

    lines: list[str] = []
    n = Notifier(on_failure=lines.append, tries=3, first_delay_s=0.01, post=post, metrics=lambda p: None)
    n.notify(notice(webhook=secret))
    assert n.idle(5)
    assert lines == [
        "notify: webhook for T_0003 failed after 3 tries: ValueError: cannot reach http://127.0.0.1:1/…"
    ]


def test_notify_never_blocks_nor_raises_and_idle_holds_no_thread() -> None:
    post = Flaky(0, delay_s=0.5)
    n = Notifier(on_failure=print, post=post, metrics=lambda p: None)
    assert not [t for t in threading.enumerate() if t.name == "dlnest-notify"]
    started = time.monotonic()
    for _ in range(3):
        n.notify(notice())
    n.notify(notice(webhook=""))  # nowhere to go: nothing
    assert time.monotonic() - started < 0.2
    assert n.idle(5) and len(post.sent) == 3
    assert not [t for t in threading.enumerate() if t.name == "dlnest-notify"]  # ended when idle

    def broken_metrics(package: str) -> dict[str, Any]:
        raise RuntimeError("unreadable")

    lines: list[str] = []
    post2 = Flaky(0)
    n2 = Notifier(on_failure=lines.append, post=post2, metrics=broken_metrics)
    n2.notify(notice(latest_metrics=None))
    assert n2.idle(5) and lines == [] and post2.sent[0][1]["latest_metrics"] == {}  # sent without metrics


def test_metrics_are_read_in_the_notifiers_thread() -> None:
    threads: list[str] = []

    def metrics(package: str) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"acc": 0.5}

    post = Flaky(0)
    n = Notifier(on_failure=print, post=post, metrics=metrics)
    n.notify(notice(latest_metrics=None))
    assert n.idle(5) and threads == ["dlnest-notify"]
    assert post.sent[0][1]["latest_metrics"] == {"acc": 0.5}


def test_close_waits_a_bounded_time_then_gives_up_with_a_line() -> None:
    lines: list[str] = []
    post = Flaky(100)
    n = Notifier(on_failure=lines.append, tries=5, first_delay_s=5.0, post=post, metrics=lambda p: None)
    n.notify(notice())
    time.sleep(0.2)  # the first try failed: the next one is 5 s away
    started = time.monotonic()
    n.close(0.3)
    assert time.monotonic() - started < 2.0
    assert len(post.calls) == 1
    assert lines == ["notify: webhook for T_0003 failed after 1 try: the center stopped before it was sent"]
    n.notify(notice(task_id="T_0004"))  # after close: refused, with a line, without raising
    assert lines[-1] == "notify: webhook for T_0004 failed: the center is stopping"


def test_close_delivers_what_is_queued() -> None:
    post = Flaky(1)
    n = Notifier(on_failure=print, first_delay_s=0.05, post=post, metrics=lambda p: None)
    n.notify(notice())
    n.close(5)
    assert len(post.sent) == 1


def test_an_email_goes_through_the_mail_sender_apart_from_the_webhook() -> None:
    post, mail = Flaky(100), Flaky(0)
    lines: list[str] = []
    n = Notifier(
        on_failure=lines.append, tries=2, first_delay_s=0.01, post=post, mail=mail, metrics=lambda p: None
    )
    n.notify(notice(email={"to": "me@lab", "password": "pw"}))
    assert n.idle(5)
    assert len(mail.sent) == 1 and len(lines) == 1 and lines[0].startswith("notify: webhook for T_0003")
    settings, subject, body = mail.sent[0]
    assert settings["to"] == "me@lab" and subject == "dlnest-ray: T_0003 SUCCEEDED" and "acc 0.991" in body


# ------------------------------------------------------------------------------------------- CLI
class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.webhook = ""

    def change_notify_webhook(self, url: str) -> None:
        self.calls.append(("change_notify_webhook", url))
        self.webhook = redact_url(url)

    def get_settings(self) -> SettingsInfo:
        return SettingsInfo(
            delay_s=2.0, max_tasks_per_device=4, starvation_s=600.0, notify_webhook=self.webhook
        )

    def get_devices_info(self) -> list[Any]:
        return []


def cli(argv: list[str], client: FakeClient | None, monkeypatch: pytest.MonkeyPatch) -> int:
    def connect(address: str | None, create: bool) -> FakeClient:
        assert client is not None, "connected although the input was bad"
        return client

    monkeypatch.setattr(queue, "connect_client", connect)
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


@pytest.mark.parametrize("url", ["ftp://x", "hooks.slack.com/x", "http://"])
def test_config_refuses_a_bad_webhook_before_connecting(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["config", "--notify-webhook", url], None, monkeypatch) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: --notify-webhook must be an http(s) URL"), err


def test_config_sets_shows_and_clears_the_webhook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient()
    assert cli(["config", "--notify-webhook", HOOK], client, monkeypatch) == 0
    assert client.calls == [("change_notify_webhook", HOOK)]
    out = capsys.readouterr().out
    assert out.strip() == "notify webhook: https://hooks.slack.com/…" and "SECRET" not in out
    assert cli(["config", "--json"], client, monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)["notify_webhook"] == "https://hooks.slack.com/…"
    assert cli(["config"], client, monkeypatch) == 0
    assert "notify webhook" in capsys.readouterr().out
    assert cli(["config", "--notify-webhook", ""], client, monkeypatch) == 0
    assert client.calls[-1] == ("change_notify_webhook", "")
    assert capsys.readouterr().out.strip() == "notify webhook: none"


def test_an_unreachable_port_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(OSError):
        post_json(f"http://127.0.0.1:{closed_port()}/x", {}, 5.0)
    assert time.monotonic() - started < 2.0
