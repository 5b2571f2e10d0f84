"""The one way to reach the center: connect to Ray, get (or create) the detached center actor, and a
client whose methods mirror DLNest's server operations.

Errors raised inside the center arrive as the same :class:`~dlnest_ray.errors.DlnestError`, not as
Ray's wrapper, so the CLI prints them as one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import DlnestError
from .analyzer_client import AnalyzerOps

__all__ = [
    "CENTER_NAME",
    "NAMESPACE",
    "Client",
    "center_exists",
    "connect",
    "ensure_ray",
    "get_center",
    "get_or_create_center",
    "remove_center",
]

CENTER_NAME = "dlnest_ray_center"
NAMESPACE = "dlnest_ray"
NO_CLUSTER = "no Ray cluster: run `dlnest-ray up` (or pass --address / set RAY_ADDRESS)"


def ensure_ray(address: str | None = None, home: str | None = None) -> None:
    """Connect this process to the cluster (see :mod:`.address` for how it is found)."""
    import ray

    if ray.is_initialized():
        return
    from .address import init_ray, reachable, resolve_address, state_home
    from .auth import client_auth

    client_auth(state_home(Path(home) if home else None))  # before Ray reads its settings
    resolved = resolve_address(address, Path(home) if home else None)
    if resolved is None or not reachable(resolved):
        raise DlnestError(NO_CLUSTER)
    init_ray(resolved, Path(home) if home else None)


def _center_options() -> dict[str, Any]:
    return {
        "name": CENTER_NAME,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "num_cpus": 0,
        "max_concurrency": 16,
    }


def get_or_create_center(home: str | None = None) -> Any:
    """The detached center actor; created (with ``home`` as its state folder) when it does not exist.

    The creating process's Ray job owns the center and every run it starts: when that driver exits,
    Ray marks their unfinished tasks FAILED. Only a driver that outlives the center may call this (the
    owner, :mod:`.owner`; a test's own driver); everything else uses :func:`connect`."""
    import ray

    from .center_actor import CenterActor
    from .store import default_home

    actor: Any = ray.remote(CenterActor)
    actor = actor.options(**_center_options())
    handle = actor.remote(str(home or default_home()))
    ray.get(handle.ping.remote())
    return handle


def get_center() -> Any:
    """The running center, or a DlnestError telling how to start one."""
    import ray

    try:
        return ray.get_actor(CENTER_NAME, namespace=NAMESPACE)
    except ValueError:
        raise DlnestError("the dlnest-ray center is not running: run `dlnest-ray up`") from None


def center_exists() -> bool:
    try:
        get_center()
        return True
    except DlnestError:
        return False


def remove_center() -> None:
    """Kill the center and the device monitors (detached: they would outlive any driver)."""
    import contextlib

    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if not isinstance(actor, dict) or actor.get("namespace") != NAMESPACE:
            continue
        name = str(actor.get("name"))
        if name == CENTER_NAME or name.startswith("dlnest_ray_monitor_"):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def call(method: Any, *args: Any, retry_s: float = 0.0, **kwargs: Any) -> Any:
    """``ray.get(method.remote(...))`` with the center's DlnestError re-raised as itself.

    ``retry_s`` > 0 (only for calls that change nothing): while the center is restarting, retry for up
    to that long. Ray restarts the center at once, but a handle taken before the restart can report it
    unavailable for a moment after it is back; a changing call is never retried, because Ray cannot say
    whether it ran."""
    import time

    import ray

    deadline = time.monotonic() + retry_s
    while True:
        try:
            return ray.get(method.remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, DlnestError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as e:
            if time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            what = type(e).__name__
            raise DlnestError(f"the center is unavailable ({what}); retry in a few seconds") from e


def _submit_env(extra: Mapping[str, str] | None, capture: bool) -> dict[str, str]:
    import os

    from ..runenv import captured_env

    return captured_env(os.environ, capture=capture, extra=extra)


READ_RETRY_S = 30.0  # a center restart (state reload included) takes a few seconds


def _op(name: str, *, reads: bool = False) -> Callable[..., Any]:
    retry_s = READ_RETRY_S if reads else 0.0

    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        return call(getattr(self.center, name), *args, retry_s=retry_s, **kwargs)

    method.__name__ = name
    method.__doc__ = f"The center's ``{name}`` (DLNest's /{name} operation)."
    return method


class Client(AnalyzerOps):
    """DLNest's server operations as methods; the analyzer ones (``analyze``, ``run_exp``,
    ``get_analyze_output``) talk to the analyzer actor directly (:class:`.analyzer_client.AnalyzerOps`)."""

    def __init__(self, center: Any) -> None:
        self.center = center
        self._analyzers: dict[str, Any] = {}

    def run_train(
        self, config_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue a run (DLNest's /run_train); its ranks get this process's environment (less the
        deny-list of :mod:`dlnest_ray.runenv`; nothing with ``capture_env=False``) plus ``env``."""
        return str(call(self.center.run_train, config_path, env=_submit_env(env, capture_env), **kw))

    def continue_train(
        self, record_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue the continuation of a package (DLNest's /continue_train); environment: see run_train."""
        return str(call(self.center.continue_train, record_path, env=_submit_env(env, capture_env), **kw))

    def analyze(
        self, record_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue an analyzer of a package (DLNest's /analyze); environment as :meth:`run_train`."""
        return str(call(self.center.analyze, record_path, env=_submit_env(env, capture_env), **kw))

    del_task = _op("del_task")
    get_task_info = _op("get_task_info", reads=True)
    get_devices_info = _op("get_devices_info", reads=True)
    get_dlnest_output = _op("get_dlnest_output", reads=True)
    clear = _op("clear")
    change_devices = _op("change_devices")
    change_delay = _op("change_delay")
    change_max_task_per_device = _op("change_max_task_per_device")
    get_settings = _op("get_settings", reads=True)
    drain = _op("drain")
    open_queue = _op("open_queue")
    owner_job = _op("owner_job", reads=True)
    cluster_authenticates = _op("cluster_authenticates", reads=True)
    center_state = _op("center_state", reads=True)
    get_DLNest_output = get_dlnest_output  # DLNest's name

    def new_proj(self, target_dir: str, mnist: bool = False) -> str:
        """Create a project on this machine (DLNest's /new_proj)."""
        from ..cli.project import create_project

        return str(create_project(Path(target_dir), mnist=mnist))


def connect(address: str | None = None, *, create: bool = True, home: str | None = None) -> Client:
    """A client of the center on the cluster at ``address``; ``create`` starts the center if needed
    (owned by a driver of its own on the head node, see :mod:`.owner`, never by this process)."""
    from .owner import ensure_center

    ensure_ray(address, home)
    return Client(ensure_center(home) if create else get_center())
