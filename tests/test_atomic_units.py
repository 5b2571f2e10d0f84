"""atomic_write (atomic.py): permissions from creation on, and nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlnest_ray.atomic import atomic_write, atomic_write_bytes


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _mode(fd_or_path: int | Path) -> int:
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else fd_or_path.stat()
    return stat.S_IMODE(st.st_mode)


@pytest.mark.usefixtures("umask")
def test_a_secret_is_0600_before_any_byte_is_written(tmp_path: Path) -> None:
    os.umask(0)  # the umask takes nothing away: the mode alone must keep others out
    target = tmp_path / "secret"
    with atomic_write(target, mode=0o600) as f:
        assert _mode(f.fileno()) == 0o600
        f.write(b"token")
    assert _mode(target) == 0o600 and target.read_bytes() == b"token"


@pytest.mark.usefixtures("umask")
def test_mode_bits_the_umask_removed_are_restored(tmp_path: Path) -> None:
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "shared", b"x", mode=0o644)
    assert _mode(tmp_path / "shared") == 0o644


@pytest.mark.usefixtures("umask")
def test_without_a_mode_the_umask_applies(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "plain", b"x")
    assert _mode(tmp_path / "plain") == 0o644


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_failure_while_opening_leaks_no_descriptor_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")

    def broken_fchmod(fd: int, mode: int) -> None:
        raise OSError("fchmod failed")

    monkeypatch.setattr(os, "fchmod", broken_fchmod)
    before = _open_fds()
    with pytest.raises(OSError, match="fchmod failed"), atomic_write(target, mode=0o600) as f:
        f.write(b"new")
    assert _open_fds() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"] and target.read_bytes() == b"old"


def test_a_failing_block_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"old")
    before = _open_fds() if os.path.isdir("/proc/self/fd") else set()
    with pytest.raises(RuntimeError), atomic_write(target, mode=0o600) as f:
        f.write(b"half")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"] and target.read_bytes() == b"old"
    if before:
        assert _open_fds() == before
