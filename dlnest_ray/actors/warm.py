"""Warm rank processes (issue 16): a single-rank run starts in a process that has already imported torch.

A rank task in a fresh Ray worker spends most of its time to the first step importing torch and the parts
of it that an optimizer's first step pulls in (seconds on a small machine). Each node's device monitor
(:class:`~dlnest_ray.actors.ray_ports.DeviceMonitor`) keeps one :class:`WarmRank` actor ready
(``num_cpus=0``, pinned to the node) that has imported torch, ``torch.optim``, ``torch._dynamo`` and
dlnest-ray's trainer, and nothing else: no user code has run in it and CUDA is not initialised, so it
is what a fresh worker is after those same imports. A single-rank run's supervisor takes it
(:meth:`DeviceMonitor.take_warm`), runs the rank in it as an actor task (``WarmRank.run``, named like a
rank task), and ends the process after that one rank, as a rank task's worker exits (``max_calls=1``).
The monitor starts the next warm process at once, in the background.

A warm process suits a run only when the run's environment agrees with the warm process's for the
variables read while torch and its native libraries load (:func:`import_time_env`; CUDA's, read when
CUDA starts, are applied before that as for a cold rank): otherwise, or when none is ready, the rank
starts cold as before, and the supervisor logs why. DDP runs (several ranks) always start cold.
``DLNEST_RAY_WARM_RANKS=0`` in the cluster's environment (``up``'s) turns warm processes off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

from .names import NAMESPACE

__all__ = [
    "WARM_ENV",
    "WarmPool",
    "WarmRank",
    "import_time_env",
    "warm_enabled",
    "warm_mismatch",
]

log = logging.getLogger(__name__)

WARM_ENV = "DLNEST_RAY_WARM_RANKS"  # "0": no warm rank processes (read in the cluster's environment)
WARM_NAME_PREFIX = "dlnest_ray_warm_"
# Variables read while torch, OpenMP, MKL/BLAS or the dynamic linker load libraries: a rank's value must
# equal the warm process's (a cold rank applies the run's environment before importing torch)
_IMPORT_TIME_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH", "LD_", "MALLOC_")
TAKE_TIMEOUT_S = 2.0  # a supervisor waits this long for the monitor's answer, then starts the rank cold


def warm_enabled(env: Mapping[str, str]) -> bool:
    """Whether this cluster keeps warm rank processes (``DLNEST_RAY_WARM_RANKS`` unset, or not 0)."""
    return env.get(WARM_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that torch and its native libraries read when they load."""
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_PREFIXES)}


def warm_mismatch(run_env: Mapping[str, str], warm_env: Mapping[str, str]) -> str:
    """Why a warm process whose import-time environment is ``warm_env`` does not suit a rank whose
    submitter's environment is ``run_env`` ("" when it does): a variable the run sets that torch reads
    at import, to another value than the warm process had (a cold rank would have imported with it)."""
    for key, value in sorted(import_time_env(run_env).items()):
        had = warm_env.get(key)
        if had != value:
            was = "unset" if had is None else repr(had)
            return f"the run sets {key}={value!r}, which torch reads at import (the warm process had {was})"
    return ""


class WarmRank:
    """A process that has imported torch and the trainer, waiting to run one rank (module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used = False
        self.env: dict[str, str] = {}
        self.took_s = 0.0

    def warm(self) -> dict[str, Any]:
        """Import what a rank imports before its user code; returns ``{"pid", "env", "took_s"}``."""
        start = time.monotonic()
        import torch
        import torch.optim  # an optimizer's first step needs it

        try:  # an optimizer's first step imports the compiler front end (seconds); absent in some builds
            import torch._dynamo
        except Exception as e:  # the rank imports it itself then, as a cold one does
            log.info("warm rank: torch._dynamo did not import: %s: %s", type(e).__name__, e)
        from ..runtime import entry  # noqa: F401 - the trainer, the savepack and their imports

        if cast(Any, torch.cuda).is_initialized():  # pragma: no cover - no import above starts CUDA
            raise RuntimeError("importing torch started CUDA: this process cannot serve as a warm rank")
        self.env = import_time_env(os.environ)
        self.took_s = time.monotonic() - start
        return {"pid": os.getpid(), "env": self.env, "took_s": round(self.took_s, 3)}

    def run(self, package: str, env: dict[str, str], **kwargs: Any) -> dict[str, object]:
        """Run one rank here (:func:`~dlnest_ray.actors.rank.rank_task`); a second call is refused."""
        with self._lock:
            if self._used:
                raise RuntimeError("a warm rank process runs one rank only")
            self._used = True
        from .rank import rank_task

        return rank_task(package, env, warm_start=True, **kwargs)


class WarmPool:
    """The device monitor's one warm process on its node: started in the background, handed out once.

    ``spawn`` creates the actor (Ray's side, injected so this logic runs without Ray in tests) and
    returns ``(handle, ready_ref)``; ``wait`` resolves ``ready_ref`` to :meth:`WarmRank.warm`'s answer
    (raising if the process died)."""

    def __init__(self, spawn: Any, wait: Any, enabled: bool) -> None:
        self._spawn, self._wait, self.enabled = spawn, wait, enabled
        self._lock = threading.Lock()
        self._current: tuple[Any, Any] | None = None
        self._info: dict[str, Any] | None = None

    def refill(self) -> None:
        """Start a warm process when none is there (or starting)."""
        if not self.enabled:
            return
        with self._lock:
            if self._current is None:
                try:
                    self._current, self._info = self._spawn(), None
                except Exception as e:  # no warm process this time: ranks start cold meanwhile
                    log.warning("could not start a warm rank process: %s: %s", type(e).__name__, e)

    def state(self) -> str:
        """``off``, ``none`` (none started, or it could not be), ``starting`` (importing) or ``ready``."""
        if not self.enabled:
            return "off"
        with self._lock:
            return self._check()[0]

    def _check(self) -> tuple[str, str]:
        """(state, why it is not ready) of the current warm process; the lock is held. A warm-up that
        failed is forgotten (the next refill starts another)."""
        if self._current is None:
            return "none", "no warm process is ready yet"
        if self._info is None:
            try:
                self._info = dict(self._wait(self._current[1], 0.0))
            except TimeoutError:
                return "starting", "the warm process is still importing torch"
            except Exception as e:
                log.warning("a warm rank process failed: %s: %s", type(e).__name__, e)
                self._current = None
                return "none", f"the warm process failed ({type(e).__name__})"
        return "ready", ""

    def take(self, run_env: Mapping[str, str]) -> tuple[Any, str]:
        """``(handle, "")`` when a warm process is ready and suits ``run_env`` (it is then the caller's,
        and the next one starts), else ``(None, why not)``."""
        if not self.enabled:
            return None, f"warm rank processes are off ({WARM_ENV}=0)"
        with self._lock:
            handle, why = self._take(run_env)
        self.refill()
        return handle, why

    def _take(self, run_env: Mapping[str, str]) -> tuple[Any, str]:
        state, why = self._check()
        if state != "ready":
            return None, why
        assert self._current is not None and self._info is not None
        handle = self._current[0]
        why = warm_mismatch(run_env, self._info.get("env", {}))
        if why:
            return None, why
        self._current, self._info = None, None
        return handle, ""


def spawn_warm(node_id: str) -> tuple[Any, Any]:
    """A :class:`WarmRank` actor on node ``node_id`` (owned by the calling monitor) and its warm-up ref."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor: Any = ray.remote(WarmRank)
    handle = actor.options(
        name=f"{WARM_NAME_PREFIX}{node_id[:8]}_{time.time_ns()}",
        namespace=NAMESPACE,
        num_cpus=0,
        max_restarts=0,
        max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote()
    return handle, handle.warm.remote()


def wait_warm(ref: Any, timeout_s: float) -> dict[str, Any]:
    """The warm-up's answer; TimeoutError while it runs, the actor's error if it died."""
    import ray

    try:
        return dict(ray.get(ref, timeout=timeout_s))
    except ray.exceptions.GetTimeoutError as e:
        raise TimeoutError(str(e)) from None
