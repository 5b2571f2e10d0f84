"""The CPU priority of a rank's process: training yields the CPUs to what people type.

A queued run's ranks run at niceness ``nice`` (the run config's key, default 10, see
:mod:`dlnest_ray.checks`), while the cluster's other workers (the center, run supervisors, analyzers)
keep the usual priority on a head ``up`` started. When the CPUs are contended, what answers people then
goes first. Runs share the CPUs among themselves as before (they all have the same niceness), and an idle
CPU goes to a niced process as to any other, so a run alone on a machine trains at the same speed.

Linux keeps the niceness per thread, and a new thread inherits its creator's: every thread the process has
now (Ray's, torch's pool if a warm process started one) is set, and every later one inherits it. Against
processes of other sessions (a terminal's commands), Linux's autogroup scheduling weighs the whole
cluster's session as one group: ``up`` gives that group a niceness of its own (``dlnest-ray up --nice``).
"""

from __future__ import annotations

import logging
import os

__all__ = ["lower_priority"]

log = logging.getLogger(__name__)


def _threads() -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:  # no /proc (not Linux): the process's niceness is the only one there is
        return [0]


def lower_priority(nice: int) -> int:
    """Raise the niceness of each thread of this process to ``nice`` where it is lower (it is never
    lowered: that needs privileges); returns the calling thread's niceness afterwards."""
    for tid in _threads():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as e:  # the thread ended meanwhile, or the system refuses: the run goes on
            log.debug("could not set the niceness of thread %d to %d: %s", tid, nice, e)
    return os.getpriority(os.PRIO_PROCESS, 0)
