"""What one rank of a queued run executes (wrapped as a Ray task by the run supervisor; no Ray here).

The same code path as ``dlnest-ray train``: :func:`dlnest_ray.runtime.trainer.train` in the save
package. The process becomes the leader of its own process group first, so the supervisor can kill
it and everything it started (DataLoader workers, subprocesses) without touching Ray's own processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

from ..atomic import atomic_write_bytes
from ..checks import config_nice
from ..errors import RunPreempted, RunStopped

# Where a rank's stop request and process group live in the package: owned by the package layout, and
# re-exported here under the names the run supervisor imports.
from ..savepack.layout import RUN_DIR, args_path, pid_file, pid_record, preempt_file, stop_file
from ..scheduling.specs import DEFAULT_MARGIN
from .priority import lower_priority

__all__ = ["RUN_DIR", "pid_file", "preempt_file", "run_rank", "stop_file"]


def run_rank(
    package: str,
    *,
    task_id: str,
    rank: int,
    resume: bool,
    ckpt_id: int,
    threads: int,
    cpu: bool,
    description: str = "",
    memory_cap_mb: int | None = None,
    memory_margin: float = DEFAULT_MARGIN,
    memory_report: Callable[[int, int | None], int | None] | None = None,
    attempt: int = 1,
    retry_reason: str = "",
    warm_start: bool = False,
) -> dict[str, object]:
    """Train this rank; returns ``{"finished_epoch"}``. ``memory_cap_mb``: the rank's reservation on its
    GPU (its allocator is capped there); ``memory_report(epoch, peak_mb)``: called after each epoch, it
    returns the reservation then (right-sizing lowers it). Raises TrainingFailed on a user error, and
    :class:`~dlnest_ray.errors.RunStopped` when the run was asked to stop: Ray then shows the rank task
    as failed with that message (as it shows a task it cancelled), never as finished. ``attempt`` > 1:
    a retry of the task (``retry_reason``: why the attempt before ended), said in the output and the
    segment. ``warm_start``: the rank runs in a warm rank process (said in the segment)."""
    import torch

    from .trainer import PreemptRequested, StopRequested, TrainOptions, train

    # A reused worker keeps the thread count of whatever first imported torch in it: set it per rank.
    torch.set_num_threads(max(1, threads))
    # training yields the CPUs to what people type (checked at submit; a hand-edited package fails here)
    lower_priority(config_nice(json.loads(args_path(package).read_text())))
    with contextlib.suppress(OSError):
        os.setpgrp()
    if os.getpgrp() == os.getpid():  # record the group only if it is ours alone: it will be SIGKILLed
        # "<pgid> <node>": the supervisor kills the group on that node only (a CPU run may land on any
        # node, and the same number there is another process); written whole or not at all
        marker = pid_file(package, task_id, rank)
        marker.parent.mkdir(exist_ok=True)
        atomic_write_bytes(marker, pid_record(os.getpgrp(), os.environ.get("DLNEST_RAY_NODE", "")).encode())
    try:
        result = train(
            package,
            TrainOptions(
                resume=resume,
                ckpt_id=ckpt_id,
                cpu=cpu,
                description=description,
                stop_file=str(stop_file(package, task_id)),
                preempt_file=str(preempt_file(package, task_id)),
                task_id=task_id,
                memory_cap_mb=memory_cap_mb,
                memory_margin=memory_margin,
                memory_report=memory_report,
                attempt=attempt,
                retry_reason=retry_reason,
                warm_start=warm_start,
            ),
        )
        return {"finished_epoch": result.finished_epoch}
    except PreemptRequested as e:
        raise RunPreempted(str(e) or "preempted") from None
    except StopRequested as e:
        raise RunStopped(str(e) or "stopped by request") from None
