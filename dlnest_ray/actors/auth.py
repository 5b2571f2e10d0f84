"""Token authentication: a cluster ``dlnest-ray up`` starts accepts only clients holding its token.

A Ray cluster runs whatever code a connected client sends it, and Ray's GCS and raylet listen on
every interface. ``up`` therefore starts its head in Ray's token mode (``RAY_AUTH_MODE=token``) with a
token it finds or makes (:func:`head_token`), and every dlnest-ray process that connects turns token
mode on with the token it finds (:func:`client_auth`), before Ray reads its configuration:

1. ``--token-file FILE`` (the CLI sets ``RAY_AUTH_TOKEN_PATH``), or ``RAY_AUTH_TOKEN_PATH``, or the token
   itself in ``RAY_AUTH_TOKEN``;
2. the token of the center's home: the path ``head.json`` records, else ``$DLNEST_RAY_HOME/auth_token``;
3. Ray's default, ``~/.ray/auth_token``.

Processes Ray starts (supervisors, ranks, analyzers, the center's owner) inherit the cluster's
settings. A user who sets ``RAY_AUTH_MODE`` is obeyed. Import-light: Ray only inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DlnestError

__all__ = [
    "TOKEN_FILE",
    "Token",
    "check_token_accepted",
    "client_auth",
    "ensure_private_home",
    "find_token",
    "head_token",
    "readable_token_file",
]

TOKEN_FILE = "auth_token"
MODE_ENV, PATH_ENV, VALUE_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Token:
    """Where this process's token comes from: a file, or the ``RAY_AUTH_TOKEN`` variable (``path`` None)."""

    path: Path | None
    where: str  # for messages: the file, or "RAY_AUTH_TOKEN"


def ensure_private_home(home: Path) -> Path:
    """The center's state folder, created (or tightened) to mode 0700: it holds the token, the queue and
    the runs' environments."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if home.stat().st_mode & 0o077:
        try:
            os.chmod(home, 0o700)
        except PermissionError:  # a folder of another user's: leave it, it is theirs
            log.warning("%s is readable by others and not ours to tighten (mode 0700 advised)", home)
    return home


def readable_token_file(path: Path) -> Path:
    """``path`` if it holds a token; one clear error naming the file and the fix otherwise."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DlnestError(
            f"the auth token file {path} cannot be read ({e.strerror or e}): fix its permissions, or point "
            f"{PATH_ENV} / --token-file at the cluster's token"
        ) from None
    if not text:
        raise DlnestError(
            f"the auth token file {path} is empty: copy the cluster's token into it (on the head: the file "
            "`dlnest-ray up` printed), or remove it and run `dlnest-ray up` to make one"
        )
    return path


def find_token(home: Path | None = None) -> Token | None:
    """The token this process would use (module docstring's order), or None when there is none."""
    explicit = os.environ.get(PATH_ENV)
    if explicit:
        return Token(readable_token_file(Path(explicit).expanduser()), explicit)
    if os.environ.get(VALUE_ENV):
        return Token(None, VALUE_ENV)
    candidates = []
    if home is not None:
        recorded = _recorded_token(home)
        if recorded is not None:
            candidates.append(recorded)
        candidates.append(home / TOKEN_FILE)
    candidates.append(Path.home() / ".ray" / TOKEN_FILE)
    for path in candidates:
        if path.exists():
            return Token(readable_token_file(path), str(path))
    return None


def _recorded_token(home: Path) -> Path | None:
    import json

    try:
        head = json.loads((home / "head.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = head.get("auth_token") if isinstance(head, dict) else None
    return Path(token) if isinstance(token, str) and token else None


def client_auth(home: Path | None = None) -> Token | None:
    """Make this process a token-mode client with the token it finds (see :func:`find_token`); a user's
    own ``RAY_AUTH_MODE`` is left as it is. Returns the token used (None: no token found, so no auth)."""
    if MODE_ENV in os.environ and os.environ[MODE_ENV].lower() != "token":
        return None  # the user chose another mode: respected
    token = find_token(home)
    if token is None:
        return None
    os.environ[MODE_ENV] = "token"
    if token.path is not None:
        os.environ[PATH_ENV] = str(token.path)
    _refresh_ray()
    return token


def _refresh_ray() -> None:
    """Ray reads its settings when imported, and caches the token: make it read them again."""
    if "ray" not in sys.modules:
        return
    import importlib

    try:
        raylet = importlib.import_module("ray._raylet")
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
    except Exception as e:  # an older Ray without these: it reads the variables at its next start
        log.warning("could not refresh Ray's auth settings: %s: %s", type(e).__name__, e)


def head_token(home: Path) -> Path:
    """The token a head ``up`` starts is given: one that exists already (``RAY_AUTH_TOKEN_PATH``, the
    home's, ``~/.ray/auth_token``), else a new one from Ray's generator in ``<home>/auth_token`` (0600)."""
    found = find_token(home)
    if found is not None and found.path is not None:
        _private(found.path)
        return found.path
    if found is not None:  # the token is in RAY_AUTH_TOKEN: keep it in a file the head can read
        value = os.environ[VALUE_ENV]
    else:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        value = generate_new_authentication_token()
    from ..atomic import atomic_write_bytes

    path = ensure_private_home(home) / TOKEN_FILE
    atomic_write_bytes(path, value.encode("ascii"), mode=0o600)
    return path


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null meanwhile (C++ logging writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _private(path: Path) -> None:
    """A token file others can read is tightened to 0600 (Ray writes ``~/.ray/auth_token`` 0644)."""
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(path, 0o600)
            log.warning("the auth token %s was readable by other users: it is 0600 now", path)
    except OSError as e:
        log.warning("could not check the permissions of %s: %s", path, e)


def check_token_accepted(address: str, token: Token | None) -> None:
    """Ask the cluster's GCS once, fast, whether it accepts this process; a refusal becomes one line
    (``ray.init`` would retry for 20 s and end with a bare ConnectionError)."""
    if address.startswith("ray://"):
        return
    import importlib

    from ray.exceptions import AuthenticationError

    raylet: Any = importlib.import_module("ray._raylet")  # no type stubs for GcsClient
    try:
        with _quiet_stderr():  # Ray's core logs each refusal to fd 2 before raising it
            client = raylet.GcsClient(address=address, cluster_id=None)
            client.internal_kv_get(b"dlnest_ray_auth_probe", None, timeout=10)
    except AuthenticationError:
        if token is None:
            raise DlnestError(
                f"the Ray cluster at {address} requires an auth token and this process has none: set "
                f"{PATH_ENV} (or --token-file) to the cluster's token file"
            ) from None
        raise DlnestError(
            f"the Ray cluster at {address} refused the auth token from {token.where}: use the token the "
            f"cluster was started with ({PATH_ENV} or --token-file)"
        ) from None
    except Exception as e:  # not an answer about auth: ray.init will say what is wrong
        log.debug("auth probe of %s: %s: %s", address, type(e).__name__, e)
