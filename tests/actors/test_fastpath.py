"""The fast control path in-process (issue 16): a center served on a Unix socket, a FastClient with the
same answers as the center's own methods, errors as their DlnestError types, the socket 0600 and closed
to other users, and a client that falls back to Ray (None) when nothing answers."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dlnest_ray.actors import fastpath, fastpath_server
from dlnest_ray.actors.center import Center
from dlnest_ray.actors.fastpath import DISABLE_ENV, FastClient, FastPathDown, fast_client, socket_path
from dlnest_ray.actors.fastpath_server import FastPathServer, peer_uid
from dlnest_ray.actors.task_rows import rows_with_metrics
from dlnest_ray.errors import DlnestError, PackageError


@pytest.fixture
def home() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dlfp-", dir="/tmp"))  # short: a socket path has ~100 bytes
    try:
        yield base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def served(center: Center, home: Path) -> Iterator[tuple[Center, FastPathServer, FastClient]]:
    server = FastPathServer(center, home)
    try:
        client = fast_client(home)
        assert client is not None
        yield center, server, client
    finally:
        server.close()


def test_the_socket_is_the_owners_only(served: tuple[Center, FastPathServer, FastClient], home: Path) -> None:
    mode = socket_path(home).stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path(home)))
        assert peer_uid(sock) == os.getuid()  # what the server checks every connection against


def test_the_same_answers_as_the_center_itself(
    served: tuple[Center, FastPathServer, FastClient], project: Path
) -> None:
    center, _, client = served
    tid = client.run_train(config_path=str(project), memory_mb=4000, capture_env=False)
    assert [t.to_row() for t in client.get_task_info(include_finished=True)] == [
        t.to_row() for t in center.get_task_info(include_finished=True)
    ]
    assert client.task(tid).package == center.get_task_info()[0].package
    assert client.get_devices_info() == center.get_devices_info()
    assert client.task_rows(True) == rows_with_metrics(center.get_task_info(True))  # `tasks`' rows
    assert client.get_settings() == center.get_settings()
    client.change_delay(7.5)
    assert center.get_settings().delay_s == 7.5 == client.get_settings().delay_s
    assert client.get_dlnest_output(0) == center.get_dlnest_output(0)
    assert client.del_task(tid).startswith(tid)
    assert client.task(tid).status is center.get_task_info(include_finished=True)[0].status


def test_errors_keep_their_type_and_their_line(
    served: tuple[Center, FastPathServer, FastClient], tmp_path: Path
) -> None:
    _, _, client = served
    with pytest.raises(PackageError) as err:
        client.continue_train(str(tmp_path / "nowhere"), capture_env=False)
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
    with pytest.raises(DlnestError, match="does not serve 'store'"):
        client.call("store")
    with pytest.raises(DlnestError, match="no task 'T_9999'"):
        client.task("T_9999")


def test_another_user_is_refused(
    served: tuple[Center, FastPathServer, FastClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, client = served
    monkeypatch.setattr(fastpath_server, "peer_uid", lambda sock: os.getuid() + 1)
    with pytest.raises(DlnestError, match="belongs to another user"):
        client.get_task_info()


def test_nothing_answering_means_ray(home: Path, center: Center, monkeypatch: pytest.MonkeyPatch) -> None:
    assert fast_client(home) is None  # no socket
    server = FastPathServer(center, home)
    server.close()
    assert not socket_path(home).exists()  # closing removes it
    home.mkdir(exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:  # a file nobody listens on
        stale.bind(str(socket_path(home)))
    assert fast_client(home) is None
    server = FastPathServer(center, home)  # a new center replaces it
    try:
        assert fast_client(home) is not None
        monkeypatch.setenv(DISABLE_ENV, "1")
        assert fast_client(home) is None
    finally:
        server.close()


def test_a_call_that_cannot_be_sent_is_retried_then_said(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "READ_RETRY_S", 0.6)
    client = FastClient(socket_path(home))
    with pytest.raises(FastPathDown, match="does not answer"):
        client.get_task_info()


def test_a_center_restart_is_waited_out(
    make_center: Callable[..., Center], home: Path, project: Path
) -> None:
    """`watch` and the shell poll: a call made while the center restarts (the socket gone, or left behind
    with nobody listening) goes through once the new center serves again, on the same socket path."""
    first = make_center()
    server = FastPathServer(first, home)
    client = fast_client(home)
    assert client is not None
    tid = client.run_train(config_path=str(project), memory_mb=4000, capture_env=False)
    server.close()
    restarted: list[FastPathServer] = []

    def restart() -> None:
        time.sleep(1.0)
        restarted.append(FastPathServer(make_center(), home))  # state reloaded from the same home

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        rows = client.get_task_info()  # sent during the gap: retried until the new center answers
        assert [r.task_id for r in rows] == [tid]
        assert any("queued" in line for line in client.get_dlnest_output(0)["lines"])
    finally:
        thread.join()
        for s in restarted:
            s.close()
