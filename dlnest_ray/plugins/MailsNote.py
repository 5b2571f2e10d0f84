"""``MailsNote``: e-mail yourself when a run ends (DLNest 0.3's plugin).

Settings (``plugins_config.MailsNote``):

* ``enable_list``: the events that send a mail, of ``Aborting`` (the run failed) and ``TrainFinish``
  (the training loop ended); default both.
* ``host``, ``port`` (default 25), ``username``, ``password``: the SMTP server and login (no login when
  ``username`` is empty). ``password_env`` names an environment variable holding the password instead
  (default ``DLNEST_MAIL_PASSWORD``), so it need not be in a config file, ``args.json`` or ``tasks``: set
  it in the shell that submits the run, and the run's environment carries it to the ranks.
* ``to`` (default: ``username``, a mail to oneself, as DLNest), ``from`` (default: ``username``),
  ``starttls`` / ``ssl`` (default false), ``timeout_s`` (default 20).

The life cycle reports results with ``MailsNotePlugin.giveResultValues({"acc": 0.98})``; the finish mail
lists the last ones given. DLNest's ``custom(self, message, subject)`` and ``SOTA(self, key, value)``
send a mail at once. Mail is sent by rank 0 only, in the background: a slow or failing server never
holds up or fails the run; a failure is logged (and printed into the output). At the end of the run,
mails still being sent get ``timeout_s`` more to finish.
"""

from __future__ import annotations

import logging
import os
import smtplib
import threading
import time
import traceback
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, ClassVar

from .base import Plugin, PluginContext

__all__ = ["DEFAULT_PASSWORD_ENV", "DLNestPlugin", "send_mail"]

DEFAULT_PASSWORD_ENV = "DLNEST_MAIL_PASSWORD"
log = logging.getLogger(__name__)


def send_mail(settings: Mapping[str, Any], subject: str, body: str) -> None:
    """Send one mail now (raises on any failure): the SMTP conversation DLNest's ``sendSelfMail`` had,
    with the optional TLS and timeout added."""
    username = str(settings.get("username") or "")
    password = str(settings.get("password") or "") or os.environ.get(
        str(settings.get("password_env") or DEFAULT_PASSWORD_ENV), ""
    )
    sender = str(settings.get("from") or username or "dlnest-ray")
    to = settings.get("to") or username
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients or not all(recipients):
        raise ValueError("no recipient: set plugins_config.MailsNote.to (or username)")
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, sender, ", ".join(recipients)
    message.set_content(body)
    host, port = str(settings.get("host") or "localhost"), int(settings.get("port") or 25)
    timeout = float(settings.get("timeout_s") or 20)
    smtp_class = smtplib.SMTP_SSL if settings.get("ssl") else smtplib.SMTP
    with smtp_class(host, port, timeout=timeout) as smtp:
        if settings.get("starttls"):
            smtp.starttls()
        if username:
            smtp.login(username, password)
        smtp.send_message(message, from_addr=sender, to_addrs=recipients)


class DLNestPlugin(Plugin):
    name: ClassVar[str] = "MailsNote"
    defaults: ClassVar[dict[str, Any]] = {
        "enable_list": ["Aborting", "TrainFinish"],
        "username": "",
        "password": "",
        "host": "localhost",
        "port": 25,
    }
    _result_values: ClassVar[dict[str, Any]] = {}
    _active: ClassVar[DLNestPlugin | None] = None  # the running rank's instance (DLNest's helpers)

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(settings, context)
        self._threads: list[threading.Thread] = []
        type(self)._result_values = {}
        type(self)._active = self

    # -------------------------------------------------------------------------------- DLNest's API
    @classmethod
    def giveResultValues(cls, results: Mapping[str, Any]) -> None:
        """The results the finish mail reports (replacing those given before)."""
        cls._result_values = dict(results)

    @classmethod
    def custom(cls, host: Any, message: str, subject: str) -> None:
        """Mail ``message`` now (DLNest: ``MailsNotePlugin.custom(self, message, subject)``)."""
        if cls._active is not None:
            cls._active._send(subject, f"{cls._active._where()} gives a message\n{message}")

    @classmethod
    def SOTA(cls, host: Any, key: str, value: Any) -> None:
        """Mail a new best value of ``key`` now."""
        if cls._active is not None:
            me = cls._active
            me._send(f"SOTA for {key}!", f"A new best {key} in {me._where()}: {value}")

    # -------------------------------------------------------------------------------- hooks
    def train_finished(self, log: Mapping[str, Any]) -> None:
        if "TrainFinish" in self.settings["enable_list"]:
            body = f"{self._where()} finished"
            results = "".join(f"| {k} : {v}" for k, v in type(self)._result_values.items())
            if results:
                body += f"\n\nThe final results are:\n{results}"
            self._send("Train Finished!", body)

    def train_aborting(self, exception: BaseException) -> None:
        if "Aborting" in self.settings["enable_list"]:
            trace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
            self._send("Train Aborted!", f"{self._where()} aborted with this exception\n{trace}")

    def close(self) -> None:
        """Give the mails still being sent one timeout in all (not one each) to finish, then let go."""
        deadline = time.monotonic() + float(self.settings.get("timeout_s") or 20)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if type(self)._active is self:
            type(self)._active = None

    # -------------------------------------------------------------------------------- sending
    def _where(self) -> str:
        task = f" ({self.context.task_id})" if self.context.task_id else ""
        return f"Train task in {self.context.package}{task}"

    def _send(self, subject: str, body: str) -> None:
        if not self.context.is_main:
            return
        settings = dict(self.settings)

        def send() -> None:
            try:
                send_mail(settings, subject, body)
                print(f"[dlnest-ray] MailsNote: sent {subject!r}", flush=True)
            except Exception as e:  # never fails the run: say so and go on
                log.warning("MailsNote could not send %r: %s: %s", subject, type(e).__name__, e)
                print(
                    f"[dlnest-ray] MailsNote could not send {subject!r}: {type(e).__name__}: {e}", flush=True
                )

        thread = threading.Thread(target=send, name="dlnest-mailsnote", daemon=True)
        thread.start()
        self._threads.append(thread)
