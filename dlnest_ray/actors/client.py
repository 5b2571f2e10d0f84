"""The one way to reach the center: connect to Ray, get (or have started) the detached center actor, and
a client whose methods mirror DLNest's server operations.

Answers are typed records (:class:`~dlnest_ray.tasks.TaskRecord`, :class:`~dlnest_ray.records.DeviceInfo`,
:class:`~dlnest_ray.records.SettingsInfo`; ``to_json()``/``to_row()`` give the dicts DLNest's HTTP
server returned). Errors raised inside the center arrive as the same
:class:`~dlnest_ray.errors.DlnestError`, not as Ray's wrapper, so the CLI prints them as one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import DlnestError
from ..records import CenterState, DeviceInfo, SettingsInfo
from ..runenv import captured_env
from ..tasks import TaskRecord
from .analyzer_client import AnalyzerOps
from .calls import call
from .names import NO_CLUSTER, get_center

if TYPE_CHECKING:
    from ..sweeps.records import SweepInfo

__all__ = ["Client", "connect", "ensure_ray"]

log = logging.getLogger(__name__)

READ_RETRY_S = 30.0  # a center restart (state reload included) takes a few seconds


def ensure_ray(address: str | None = None, home: str | None = None) -> None:
    """Connect this process to the cluster (see :mod:`.address` for how it is found)."""
    import ray

    if ray.is_initialized():
        return
    from .address import init_ray, reachable, resolve_address

    home_path = Path(home) if home else None
    resolved = resolve_address(address, home_path)
    if resolved is None or not reachable(resolved):
        raise DlnestError(NO_CLUSTER)
    init_ray(resolved, home_path)


def _submit_env(extra: Mapping[str, str] | None, capture: bool) -> dict[str, str]:
    return captured_env(os.environ, capture=capture, extra=extra)


class Client:
    """DLNest's server operations as methods, on the center's actor handle. The analyzer operations
    (``analyze`` queues through the center; ``run_exp``, ``get_analyze_output``... talk to the analyzer
    actor directly) are :class:`.analyzer_client.AnalyzerOps`, reached here or as ``client.analyzers``."""

    def __init__(self, center: Any) -> None:
        self.center = center
        self.analyzers = AnalyzerOps(self.task)

    # Every argument goes by keyword: a handle whose client cannot load the center's class (the cluster
    # runs other dlnest-ray code, e.g. started before an upgrade) accepts only keywords, so a positional
    # one would fail in Ray ("too many positional arguments") before it reached the center.
    def _read(self, name: str, /, **kwargs: Any) -> Any:
        """A call that changes nothing: it waits out a center restart."""
        return call(getattr(self.center, name), retry_s=READ_RETRY_S, **kwargs)

    def _change(self, name: str, /, **kwargs: Any) -> Any:
        """A call that changes something: never retried (Ray cannot say whether it ran)."""
        return call(getattr(self.center, name), **kwargs)

    # ------------------------------------------------------------------------------------------ submit
    def run_train(
        self, config_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue a run (DLNest's /run_train); its ranks get this process's environment (less the
        deny-list of :mod:`dlnest_ray.runenv`; nothing with ``capture_env=False``) plus ``env``."""
        return str(
            self._change("run_train", config_path=config_path, env=_submit_env(env, capture_env), **kw)
        )

    def continue_train(
        self, record_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue the continuation of a package (DLNest's /continue_train); environment: see run_train."""
        return str(
            self._change("continue_train", record_path=record_path, env=_submit_env(env, capture_env), **kw)
        )

    def analyze(
        self, record_path: str, *, env: Mapping[str, str] | None = None, capture_env: bool = True, **kw: Any
    ) -> str:
        """Queue an analyzer of a package (DLNest's /analyze); environment as :meth:`run_train`."""
        return str(self._change("analyze", record_path=record_path, env=_submit_env(env, capture_env), **kw))

    def sweep(
        self,
        config_path: str,
        *,
        space: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        capture_env: bool = True,
        **kw: Any,
    ) -> str:
        """Queue a sweep (issue 15); returns its id (``S_0001``). ``space``: dotted config key → SPEC text
        (``"0.1,0.01"``, ``"range(1,10,2)"``, ``"uniform(0,1)"``, ``"loguniform(1e-4,1e-1)"``,
        ``"randint(1,8)"``) or a list of values. Keywords: ``freq_path``, ``trials``, ``seed``, ``name``,
        ``new_keys``, ``stop`` (``"median:acc:max@2"``, ``"asha:acc:max:min=1:eta=3"``) and those of
        :meth:`run_train` (``memory_mb``, ``placement``, ``gpus``, ``retries``, ``priority``,
        ``no_preempt``); environment as :meth:`run_train`."""
        return str(
            self._change(
                "sweep", config_path=config_path, space=dict(space), env=_submit_env(env, capture_env), **kw
            )
        )

    def get_sweep(self, sweep_id: str) -> SweepInfo:
        """A sweep (``.record``: how it was asked for, its trials and their values, the stop rule's
        decisions) and its trials' task records now (``.tasks``)."""
        return cast("SweepInfo", self._read("get_sweep", sweep_id=sweep_id))

    def get_sweeps(self) -> list[SweepInfo]:
        """Every sweep of the center, oldest first (as :meth:`get_sweep`)."""
        return list(self._read("get_sweeps"))

    def del_task(self, task_id: str) -> str:
        """Delete a task (pending: out of the queue; running: stopped), or with a sweep id (``S_0001``)
        every unfinished trial of that sweep."""
        return str(self._change("del_task", task_id=task_id))

    # ------------------------------------------------------------------------------------------ reads
    def get_task_info(self, include_finished: bool = False) -> list[TaskRecord]:
        """Running and pending tasks (DLNest's /get_task_info); ``include_finished`` adds the rest."""
        return list(self._read("get_task_info", include_finished=include_finished))

    def task(self, task_id: str) -> TaskRecord:
        """The center's record of ``task_id`` (finished ones included)."""
        for t in self.get_task_info(include_finished=True):
            if t.task_id == task_id:
                return t
        raise DlnestError(f"no task {task_id!r}; `dlnest-ray tasks --all` lists them")

    def task_rows(self, include_finished: bool = False) -> list[dict[str, Any]]:
        """``tasks``' rows (``TaskRecord.to_row()``) with ``latest_metrics``: each started run's last
        metrics row, read by the center (:mod:`.task_rows`), so the caller needs no Parquet reader."""
        return list(self._read("task_rows", include_finished=include_finished))

    def get_devices_info(self) -> list[DeviceInfo]:
        return list(self._read("get_devices_info"))

    def get_dlnest_output(self, offset: int = 0) -> dict[str, Any]:
        """The center's messages from ``offset``: ``{"offset", "end", "missed", "lines"}``."""
        return dict(self._read("get_dlnest_output", offset=offset))

    def get_settings(self) -> SettingsInfo:
        return cast(SettingsInfo, self._read("get_settings"))

    def center_state(self) -> CenterState:
        return cast(CenterState, self._read("center_state"))

    def owner_job(self) -> str:
        return str(self._read("owner_job"))

    def code_skew(self) -> str | None:
        """None when the center runs the same dlnest-ray code as this process, else what to do about it
        (:mod:`dlnest_ray.codeid`). A center too old to say counts as other code."""
        from ..codeid import SKEW_MESSAGE, code_id

        try:
            theirs = self._read("code_id")
        except AttributeError as e:  # the handle has no such method: the center's class is other code
            log.debug("the center cannot say which code it runs: %s", e)
            theirs = None
        return None if theirs == code_id() else SKEW_MESSAGE

    # ------------------------------------------------------------------------------------------ changes
    def clear(self) -> None:
        self._change("clear")

    def change_devices(self, enabled: list[str]) -> list[str]:
        return list(self._change("change_devices", enabled=enabled))

    def change_delay(self, seconds: float) -> None:
        self._change("change_delay", seconds=seconds)

    def change_max_task_per_device(self, n: int) -> None:
        self._change("change_max_task_per_device", n=n)

    def change_margin(self, margin: float) -> None:
        """Right-sized reservations become the measured peak × ``margin`` (>= 1; default 1.15)."""
        self._change("change_margin", margin=margin)

    def change_notify_webhook(self, url: str) -> None:
        """The cluster's default webhook for word when a run ends (http(s); "" clears it)."""
        self._change("change_notify_webhook", url=url)

    def change_retries(self, retries: int) -> None:
        """A run's retries when neither ``--retries`` nor its config's ``retries`` key says (>= 0)."""
        self._change("change_retries", retries=retries)

    def drain(self, cancel_running: bool = False) -> dict[str, list[str]]:
        return dict(self._change("drain", cancel_running=cancel_running))

    def open_queue(self) -> bool:
        return bool(self._change("open_queue"))

    # ------------------------------------------------------------------------------------------ analyzers
    def analyzer(
        self, task_id: str, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> Any:
        return self.analyzers.analyzer(task_id, wait=wait, on_wait=on_wait)

    def submit_exp(
        self, task_id: str, script: str, timeout_s: float | None = None, **kw: Any
    ) -> dict[str, Any]:
        return self.analyzers.submit_exp(task_id, script, timeout_s, **kw)

    def poll_exp(self, task_id: str, job: int, offset: int = 0, wait_s: float = 1.0) -> dict[str, Any]:
        return self.analyzers.poll_exp(task_id, job, offset, wait_s)

    def cancel_exp(self, task_id: str, job: int) -> dict[str, Any]:
        return self.analyzers.cancel_exp(task_id, job)

    def run_exp(self, task_id: str, script: str, timeout_s: float | None = None) -> dict[str, Any]:
        return self.analyzers.run_exp(task_id, script, timeout_s)

    def get_analyze_output(self, task_id: str, offset: int = 0, wait_s: float = 0.0) -> dict[str, Any]:
        return self.analyzers.get_analyze_output(task_id, offset, wait_s)

    def analyzer_info(self, task_id: str) -> dict[str, Any]:
        return self.analyzers.analyzer_info(task_id)

    def analyze_scripts(self, task_id: str) -> list[str]:
        return self.analyzers.analyze_scripts(task_id)

    # ------------------------------------------------------------------------------------------ DLNest
    def new_proj(self, target_dir: str, mnist: bool = False) -> str:
        """Create a project on this machine (DLNest's /new_proj)."""
        from ..project import create_project

        return str(create_project(Path(target_dir), mnist=mnist))

    get_DLNest_output = get_dlnest_output  # DLNest's names
    runExp = run_exp
    getAnalyzeOutput = get_analyze_output


def connect(address: str | None = None, *, create: bool = True, home: str | None = None) -> Client:
    """A client of the center on the cluster at ``address``; ``create`` starts the center if needed
    (owned by a driver of its own on the head node, see :mod:`.owner`, never by this process)."""
    from .owner import ensure_center

    ensure_ray(address, home)
    client = Client(ensure_center(home) if create else get_center())
    skew = client.code_skew()
    if skew is not None:
        log.warning("%s", skew)
    return client
