"""Word when a task ends: a webhook and/or an e-mail, sent in the background by the center.

Where a notice goes:

* the webhook: a run's own ``notify.webhook`` (its config), else the cluster's default
  (``config --notify-webhook URL``); an HTTP POST of a JSON body (:meth:`Notice.payload`) whose
  ``text`` is a one-line message Slack (and Mattermost, Discord's ``/slack`` endpoint...) shows as is;
* an e-mail: only when the run's config has ``notify.email``, with the keys of the MailsNote plugin's
  settings (``host``, ``port``, ``username``, ``password`` or ``password_env``, ``to``, ``from``,
  ``starttls``, ``ssl``, ``timeout_s``), sent by :func:`dlnest_ray.plugins.MailsNote.send_mail`.

Both may hold secrets (a Slack webhook URL is one), so they live in private files of the center's
state folder (:class:`NotifyStore`: ``<home>/notify/``, the folder 0700 and the files 0600), never in
``center.json``, ``tasks --json`` or the log; a run's file is removed when its notice has been handed
to the :class:`Notifier`. A password given by ``password_env`` is read from the submitter's environment
at submit, since the center's own environment is not the submitter's.

The :class:`Notifier` never blocks its caller and never raises into it: notices go to a queue that a
daemon thread (started when there is something to send, ended when there is nothing left) delivers,
each channel retried with exponential backoff; after the last failed try one line goes to
``on_failure`` (the center's ``log``). No Ray here.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import math
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..errors import ConfigError, DlnestError
from ..plugins.MailsNote import DEFAULT_PASSWORD_ENV, send_mail
from ..savepack.metrics import BOOKKEEPING_COLUMNS, is_companion, latest_metrics
from .auth import ensure_private_home

__all__ = [
    "EMAIL_KEYS",
    "NOTIFY_DIR",
    "NOTIFY_KEY",
    "Notice",
    "Notifier",
    "NotifySettings",
    "NotifyStore",
    "check_webhook",
    "notice_reason",
    "parse_notify",
    "post_json",
    "redact_url",
]

log = logging.getLogger(__name__)

NOTIFY_KEY = "notify"  # the run config's key
NOTIFY_DIR = "notify"  # <home>/notify/<task id>.json, and the cluster's default in cluster.json
CLUSTER_FILE = "cluster.json"
EMAIL_KEYS = frozenset(
    {"host", "port", "username", "password", "password_env", "to", "from", "starttls", "ssl", "timeout_s"}
)
TEXT_METRICS = 6  # the most metrics the one-line text names
ERROR_CHARS = 2000  # the most of a task's error a notice carries


# ---------------------------------------------------------------------------------------------- settings
def check_webhook(url: object, what: str = "notify.webhook") -> str:
    """``url`` if it is an http(s) URL with a host; else a :class:`DlnestError` naming ``what`` (the
    URL itself is not repeated: it may hold a token)."""
    if not isinstance(url, str):
        raise ConfigError(f"{what} must be an http(s) URL (a string), not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(f"{what} must be an http(s) URL like https://host/path ({got})")
    return url.strip()


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` plus ``/…`` when the URL has more: what may be shown of a webhook."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    more = (parts.path not in ("", "/")) or bool(parts.query) or bool(parts.fragment)
    return f"{parts.scheme}://{netloc}" + ("/…" if more else "")


@dataclass(frozen=True, kw_only=True)
class NotifySettings:
    """A run's own notification settings: ``webhook`` ("" → the cluster's default) and ``email`` (the
    MailsNote settings; empty → no mail). Holds secrets: never shown, logged or put in ``center.json``."""

    webhook: str = field(default="", repr=False)
    email: dict[str, Any] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.webhook or self.email)

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "email": dict(self.email)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> NotifySettings:
        email = raw.get("email")
        return cls(
            webhook=str(raw.get("webhook") or ""), email=dict(email) if isinstance(email, dict) else {}
        )


def _check_email(raw: object, env: Mapping[str, str]) -> dict[str, Any]:
    what = "notify.email"
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must be a dict of MailsNote settings (host, port, username, to...)")
    unknown = sorted(set(raw) - EMAIL_KEYS)
    if unknown:
        raise ConfigError(
            f"{what}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(sorted(EMAIL_KEYS))})"
        )
    for key in ("host", "username", "password", "password_env", "from"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{what}.{key} must be a string")
    for key in ("starttls", "ssl"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{what}.{key} must be true or false")
    port = raw.get("port", 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{what}.port must be an integer from 1 to 65535")
    timeout = raw.get("timeout_s", 20)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"{what}.timeout_s must be a positive number of seconds")
    to = raw.get("to") or raw.get("username") or ""
    recipients = [to] if isinstance(to, str) else to
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(r, str) and r for r in recipients)
    ):
        raise ConfigError(f"{what}.to must be an address or a list of addresses (or set {what}.username)")
    email = dict(raw)
    if not email.get("password"):  # the center's environment is not the submitter's: take it now
        secret = env.get(str(email.get("password_env") or DEFAULT_PASSWORD_ENV), "")
        if secret:
            email["password"] = secret
    return email


def parse_notify(raw: object, env: Mapping[str, str] | None = None) -> NotifySettings:
    """The run config's ``notify`` value, checked: a dict with ``webhook`` (an http(s) URL) and/or
    ``email`` (MailsNote settings); None or absent → empty settings. ``env``: the submitter's environment,
    where ``email.password_env`` is looked up. Raises a one-line :class:`ConfigError` naming the bad part."""
    if raw is None:
        return NotifySettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{NOTIFY_KEY} must be a dict with 'webhook' and/or 'email'")
    unknown = sorted(set(raw) - {"webhook", "email"})
    if unknown:
        raise ConfigError(
            f"{NOTIFY_KEY}: unknown key {', '.join(map(repr, unknown))} (known: webhook, email)"
        )
    webhook = raw.get("webhook") or ""
    if webhook:
        webhook = check_webhook(webhook)
    email = _check_email(raw["email"], env or {}) if raw.get("email") is not None else {}
    return NotifySettings(webhook=webhook, email=email)


class NotifyStore:
    """The private notification settings: each run's (``<home>/notify/<task id>.json``) and the
    cluster's default webhook (``<home>/notify/cluster.json``); the folder 0700, the files 0600, both
    written atomically."""

    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / NOTIFY_DIR
        self._webhook: str | None = None  # the cluster's default, read once

    def _read(self, name: str) -> dict[str, Any]:
        try:
            raw = json.loads((self.folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise DlnestError(f"the notification settings {self.folder / name} are unreadable ({e})") from e
        return raw if isinstance(raw, dict) else {}

    def _write(self, name: str, obj: Mapping[str, Any]) -> None:
        ensure_private_home(self.folder)
        atomic_write_json(self.folder / name, dict(obj), mode=0o600)

    def put(self, task_id: str, settings: NotifySettings) -> None:
        if settings:
            self._write(f"{task_id}.json", settings.to_json())

    def get(self, task_id: str) -> NotifySettings:
        return NotifySettings.from_json(self._read(f"{task_id}.json"))

    def drop(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{task_id}.json").unlink()

    @property
    def webhook(self) -> str:
        """The cluster's default webhook ("" when none)."""
        if self._webhook is None:
            self._webhook = str(self._read(CLUSTER_FILE).get("webhook") or "")
        return self._webhook

    def set_webhook(self, url: str) -> None:
        """Set (or, with "", clear) the cluster's default webhook; ``url`` must be checked already."""
        if url:
            self._write(CLUSTER_FILE, {"webhook": url})
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / CLUSTER_FILE).unlink()
        self._webhook = url


# ---------------------------------------------------------------------------------------------- notices
def _number(value: Any) -> Any:
    """JSON-safe: a non-finite float becomes None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One task's end, and where to send word of it. ``latest_metrics`` None: read from the package's
    ``metrics.parquet`` when it is sent (``{}`` once read and there is none)."""

    task_id: str
    status: str
    reason: str = ""
    error: str = ""
    package: str = ""
    name: str = ""
    attempt: int = 1
    latest_metrics: dict[str, Any] | None = None
    webhook: str = field(default="", repr=False)
    email: dict[str, Any] = field(default_factory=dict, repr=False)

    def text(self) -> str:
        """One line: ``T_0003 SUCCEEDED: mnist (2026-11-28_09-12-03_114) — acc 0.991 loss 0.05``."""
        where = Path(self.package).name if self.package else ""
        head = f"{self.task_id} {self.status}"
        label = " ".join(x for x in (self.name, f"({where})" if where else "") if x)
        if label:
            head += f": {label}"
        if self.attempt > 1:
            head += f" [attempt {self.attempt}]"
        tail = []
        if self.reason:
            tail.append(self.reason)
        metrics = self.latest_metrics or {}
        names = list(metrics)
        shown = [
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k not in BOOKKEEPING_COLUMNS and not is_companion(k, names) and _number(v) is not None
        ][:TEXT_METRICS]
        if shown:
            tail.append(" ".join(shown))
        return head + "".join(f" — {t}" for t in tail)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: task_id, status, reason, error, package, latest_metrics, attempt, text."""
        metrics = self.latest_metrics
        return {
            "task_id": self.task_id,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "package": self.package,
            "latest_metrics": None if metrics is None else {k: _number(v) for k, v in metrics.items()},
            "attempt": self.attempt,
            "text": self.text(),
        }

    def mail(self) -> tuple[str, str]:
        """The e-mail's subject and body."""
        lines = [self.text(), "", f"task: {self.task_id}", f"status: {self.status}"]
        lines += [f"attempt: {self.attempt}"] if self.attempt > 1 else []
        lines += [f"package: {self.package}"] if self.package else []
        lines += [f"reason: {self.reason}"] if self.reason else []
        if self.latest_metrics:
            lines += ["", "latest metrics:"] + [f"  {k}: {v}" for k, v in self.latest_metrics.items()]
        if self.error and self.error != self.reason:
            lines += ["", "error:", self.error]
        return f"dlnest-ray: {self.task_id} {self.status}", "\n".join(lines) + "\n"


def notice_reason(error: str) -> str:
    """The short reason of a task's end: the first line of its error, at most 200 characters."""
    first = error.strip().splitlines()[0] if error.strip() else ""
    return first if len(first) <= 200 else first[:199] + "…"


def post_json(url: str, payload: Mapping[str, Any], timeout_s: float) -> None:
    """POST ``payload`` as JSON to ``url``; raises unless the answer is 2xx."""
    data = json.dumps(payload, allow_nan=False, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "dlnest-ray"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # http(s): checked when set
        status = int(response.status)
        response.read(1 << 16)
    if not 200 <= status < 300:
        raise OSError(f"HTTP {status}")


def _read_metrics(package: str) -> dict[str, Any] | None:
    return latest_metrics(Path(package)) if package else None


# ---------------------------------------------------------------------------------------------- notifier
@dataclass(kw_only=True)
class _Job:
    notice: Notice
    channel: str  # "webhook" or "e-mail"
    tries: int = 0


class Notifier:
    """Delivers notices in the background. ``notify`` returns at once and never raises; each channel of a
    notice is tried up to ``tries`` times, waiting ``first_delay_s`` after the first failure and twice as
    long after each next; after the last failure ``on_failure`` gets one line (``notify: webhook for
    T_0003 failed after 5 tries: ...``). The thread runs only while something is queued, so an idle
    notifier holds none. ``post`` and ``mail`` are the senders (tests replace them)."""

    def __init__(
        self,
        *,
        on_failure: Callable[[str], None],
        tries: int = 5,
        first_delay_s: float = 1.0,
        timeout_s: float = 10.0,
        post: Callable[[str, Mapping[str, Any], float], None] = post_json,
        mail: Callable[[Mapping[str, Any], str, str], None] = send_mail,
        metrics: Callable[[str], dict[str, Any] | None] = _read_metrics,
    ) -> None:
        if tries < 1:
            raise ValueError("tries must be at least 1")
        self.on_failure, self.tries, self.first_delay_s, self.timeout_s = (
            on_failure,
            tries,
            first_delay_s,
            timeout_s,
        )
        self._post, self._mail, self._metrics = post, mail, metrics
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Job]] = []  # a heap: (due, order, job)
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # set by close: nothing is tried after it

    # ------------------------------------------------------------------------------------------ public
    def notify(self, notice: Notice) -> None:
        """Queue ``notice`` for its webhook and/or e-mail (nothing when it has neither)."""
        try:
            jobs = [_Job(notice=notice, channel="webhook")] if notice.webhook else []
            jobs += [_Job(notice=notice, channel="e-mail")] if notice.email else []
            if not jobs:
                return
            with self._cond:
                closed = self._deadline is not None
                if not closed:
                    now = time.monotonic()
                    for job in jobs:
                        heapq.heappush(self._queue, (now, next(self._order), job))
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, name="dlnest-notify", daemon=True)
                        self._thread.start()
                    self._cond.notify_all()
            for job in jobs if closed else ():
                self._fail(job, "the center is stopping")
        except Exception:  # never into the center
            log.exception("could not queue the notice of %s", notice.task_id)

    def idle(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing is queued or being sent (at most ``timeout_s``); whether it is so."""
        with self._cond:
            return self._cond.wait_for(lambda: self._thread is None, timeout_s)

    def close(self, wait_s: float = 10.0) -> None:
        """Let queued notices be delivered for up to ``wait_s`` seconds (retries included), then give up on
        the rest (each gets its ``on_failure`` line). Later notices are refused the same way."""
        with self._cond:
            self._deadline = time.monotonic() + wait_s
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(wait_s + self.timeout_s)

    # ------------------------------------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            dropped: list[_Job] = []
            with self._cond:
                job = self._next(dropped)
                if job is None and not dropped:
                    self._thread = None
                    self._cond.notify_all()
                    return
            for gone in dropped:
                self._fail(gone, "the center stopped before it was sent")
            if job is not None:
                self._try(job)

    def _next(self, dropped: list[_Job]) -> _Job | None:
        """The next job, once it is due; None when nothing is queued, or when ``close``'s deadline has
        passed (the queued jobs are then moved to ``dropped``). Hold the condition."""
        while self._queue:
            now = time.monotonic()
            if self._deadline is not None and now >= self._deadline:
                dropped.extend(job for _, _, job in self._queue)
                self._queue.clear()
                return None
            due = self._queue[0][0]
            if due <= now:
                return heapq.heappop(self._queue)[2]
            until = due if self._deadline is None else min(due, self._deadline)
            self._cond.wait(until - now)
        return None

    def _try(self, job: _Job) -> None:
        notice = job.notice
        try:
            if notice.latest_metrics is None:
                try:
                    metrics = self._metrics(notice.package)
                except Exception as e:  # a display detail: send without
                    log.debug("no metrics for %s: %s", notice.task_id, e)
                    metrics = None
                notice = job.notice = replace(notice, latest_metrics=metrics or {})
            if job.channel == "webhook":
                self._post(notice.webhook, notice.payload(), self.timeout_s)
            else:
                subject, body = notice.mail()
                self._mail(notice.email, subject, body)
        except Exception as e:
            job.tries += 1
            message = f"{type(e).__name__}: {e}".replace(notice.webhook or "\0", redact_url(notice.webhook))
            log.debug("notify: %s for %s, try %d: %s", job.channel, notice.task_id, job.tries, message)
            if job.tries >= self.tries:
                self._fail(job, message)
                return
            with self._cond:
                due = time.monotonic() + self.first_delay_s * 2 ** (job.tries - 1)
                heapq.heappush(self._queue, (due, next(self._order), job))
            return
        log.debug("notify: %s for %s %s delivered", job.channel, notice.task_id, notice.status)

    def _fail(self, job: _Job, why: str) -> None:
        tries = f" after {job.tries} {'try' if job.tries == 1 else 'tries'}" if job.tries else ""
        line = f"notify: {job.channel} for {job.notice.task_id} failed{tries}: {' '.join(why.split())}"
        try:
            self.on_failure(line)
        except Exception:
            log.exception("%s", line)
