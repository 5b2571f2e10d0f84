"""A small SMTP server on 127.0.0.1 for the MailsNote tests (no third-party package, no network).

It speaks what ``smtplib`` needs: EHLO (advertising AUTH PLAIN LOGIN), AUTH PLAIN/LOGIN, MAIL FROM,
RCPT TO, DATA, RSET, NOOP, QUIT; it records each accepted message with the login it came with.
"""

from __future__ import annotations

import base64
import socketserver
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

__all__ = ["Mail", "SmtpServer"]


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    login: tuple[str, str] | None
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)


@dataclass
class SmtpServer:
    """``with SmtpServer() as smtp:`` serves on ``smtp.port`` until the block ends."""

    mails: list[Mail] = field(default_factory=list)
    port: int = 0
    _server: socketserver.ThreadingTCPServer | None = None

    def __enter__(self) -> SmtpServer:
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 test SMTP")
                sender, recipients, login = "", [], None
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode().rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.wfile.write(b"250-test\r\n250-AUTH PLAIN LOGIN\r\n250 OK\r\n")
                    elif verb == "AUTH":
                        parts = line.split()
                        if parts[1].upper() == "PLAIN":
                            blob = parts[2] if len(parts) > 2 else self._ask("")
                            _, user, password = base64.b64decode(blob).decode().split("\0")
                        else:
                            user = base64.b64decode(self._ask("VXNlcm5hbWU6")).decode()
                            password = base64.b64decode(self._ask("UGFzc3dvcmQ6")).decode()
                        login = (user, password)
                        self.reply("235 authenticated")
                    elif verb == "MAIL":
                        sender = line.split(":", 1)[1].strip().strip("<>").split(">")[0]
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        data = []
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                        owner.mails.append(
                            Mail(sender, recipients, login, message_from_bytes(b"".join(data)))
                        )
                        sender, recipients = "", []
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # RSET, NOOP and anything else
                        self.reply("250 OK")

            def _ask(self, prompt: str) -> str:
                self.reply(f"334 {prompt}")
                return self.rfile.readline().decode().strip()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="test-smtp", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
