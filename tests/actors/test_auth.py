"""Where a process finds its auth token, how `up` makes one, and the home folder's permissions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dlnest_ray.actors import auth
from dlnest_ray.errors import DlnestError


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RAY_AUTH_* variables and a HOME of our own (no ~/.ray/auth_token)."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, "")  # recorded now, so whatever the test sets is undone after it
        monkeypatch.delenv(name)
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    return user


def write(path: Path, text: str = "a" * 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_order_explicit_then_the_homes_then_rays(clean: Path, tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    assert auth.find_token(home) is None
    ray_default = write(clean / ".ray" / "auth_token")
    assert auth.find_token(home) == auth.Token(ray_default, str(ray_default))
    homes = write(home / "auth_token")
    assert auth.find_token(home).path == homes  # type: ignore[union-attr]
    recorded = write(tmp_path / "elsewhere" / "tok")
    (home / "head.json").write_text(json.dumps({"started_by": "dlnest-ray", "auth_token": str(recorded)}))
    assert auth.find_token(home).path == recorded  # type: ignore[union-attr]
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert auth.find_token(home) == auth.Token(None, "RAY_AUTH_TOKEN")
    explicit = write(tmp_path / "explicit")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(explicit))
    assert auth.find_token(home).path == explicit  # type: ignore[union-attr]


@pytest.mark.parametrize("content", ["", "   \n"])
def test_an_empty_token_file_is_one_clear_line(
    clean: Path, tmp_path: Path, monkeypatch, content: str
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(write(tmp_path / "t", content)))
    with pytest.raises(DlnestError, match=r"the auth token file .*/t is empty: copy the cluster's token"):
        auth.find_token(None)


def test_an_unreadable_token_file_names_the_file(clean: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(DlnestError, match=r"the auth token file .*/missing cannot be read"):
        auth.find_token(None)


def test_client_auth_turns_token_mode_on_unless_the_user_chose(
    clean: Path, tmp_path: Path, monkeypatch
) -> None:
    import os

    home = tmp_path / "home"
    token = write(home / "auth_token")
    used = auth.client_auth(home)
    assert used is not None and used.path == token
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    assert auth.client_auth(home) is None and os.environ["RAY_AUTH_MODE"] == "disabled"


def test_up_makes_a_private_token_in_the_home(clean: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = auth.head_token(home)
    assert path == home / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text()) == 64
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert auth.head_token(home) == path and path.read_text() == path.read_text()  # kept, not remade


def test_up_uses_an_existing_token_and_tightens_it(clean: Path, tmp_path: Path) -> None:
    existing = write(clean / ".ray" / "auth_token")
    existing.chmod(0o644)  # as Ray writes it
    assert auth.head_token(tmp_path / "home") == existing
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert not (tmp_path / "home" / "auth_token").exists()


def test_a_private_home_is_created_and_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    auth.ensure_private_home(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    fresh = auth.ensure_private_home(tmp_path / "a" / "b")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
