"""One rank of a run, as the code a Ray worker runs: in a fresh worker as a Ray task (``max_calls=1``), or
in a warm rank process (:mod:`.warm`). Both apply the run's environment first, then train the rank."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from .names import get_center

__all__ = ["REPORT_TIMEOUT_S", "memory_reporter", "rank_task"]

log = logging.getLogger(__name__)

REPORT_TIMEOUT_S = 30.0  # a rank's per-epoch memory report: the run waits at most this long for the center


def rank_task(package: str, env: dict[str, str], **kwargs: Any) -> dict[str, object]:
    """One rank as a Ray task. The run's environment (``CUDA_VISIBLE_DEVICES``, the DDP rendezvous) is
    applied here, before torch starts CUDA, rather than as a Ray runtime env: a runtime env of its own
    would make Ray spawn a new worker for every run (seconds of queue latency). Rank workers are killed
    after their run, so a worker never carries one run's CUDA context or modules into the next."""
    import sys

    import ray

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("this Ray worker already initialised CUDA for other work; resubmit the run")
    os.environ.update(env)
    os.environ["DLNEST_RAY_NODE"] = ray.get_runtime_context().get_node_id()[:8]
    from ..runtime.entry import run_rank  # torch comes in here, in the rank's process only

    report_epochs = bool(kwargs.pop("report_epochs", False))  # a sweep's trial reports on CPU too
    if kwargs.get("memory_cap_mb") is not None or report_epochs:
        kwargs["memory_report"] = memory_reporter(str(kwargs["task_id"]), int(kwargs["rank"]))
    return run_rank(package, **kwargs)


def memory_reporter(task_id: str, rank: int) -> Callable[[int, int | None], int | None]:
    """What a rank calls after each epoch: tells the center its peak and gets its reservation back
    (right-sizing may have lowered it); a sweep's trial on CPU reports too (no peak), so its sweep's stop
    rule is applied after each of its epochs. An unreachable center (restarting) leaves the cap as it is."""
    import ray

    def report(epoch: int, peak_mb: int | None) -> int | None:
        try:
            ref = get_center().rank_memory.remote(task_id=task_id, rank=rank, epoch=epoch, peak_mb=peak_mb)
            cap = int(ray.get(ref, timeout=REPORT_TIMEOUT_S))
        except Exception as e:  # the run goes on with the cap it has; the next epoch reports again
            log.warning("%s rank %d: could not report its memory: %s: %s", task_id, rank, type(e).__name__, e)
            return None
        return cap if cap > 0 else None

    return report
