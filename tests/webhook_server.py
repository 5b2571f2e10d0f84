"""A small webhook receiver on 127.0.0.1 for the notification tests (no third-party package, no network).

``with WebhookServer(statuses=[500, 500]) as hook:`` answers the first two POSTs with 500 and the rest
with 200; ``delay_s`` makes every answer wait. ``hook.bodies`` holds the JSON bodies answered 2xx,
``hook.hits`` counts every POST.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["WebhookServer", "closed_port"]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebhookServer:
    statuses: list[int] = field(default_factory=list)  # the first answers; then 200
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _got: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._got = threading.Condition(self._lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T0KEN"

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``n`` bodies arrived (at most ``timeout_s``); returns them."""
        with self._got:
            self._got.wait_for(lambda: len(self.bodies) >= n, timeout_s)
            return list(self.bodies)

    def __enter__(self) -> WebhookServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                with owner._got:
                    owner.hits += 1
                    status = owner.statuses.pop(0) if owner.statuses else 200
                    if 200 <= status < 300:
                        owner.bodies.append(json.loads(raw))
                        owner._got.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a sleeping answer does not hold up the end of the test
        self._server = server
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="test-webhook", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
