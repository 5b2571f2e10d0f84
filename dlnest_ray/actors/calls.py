"""Calling an actor and turning what Ray raises into what dlnest-ray says (one place for it)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import DlnestError

__all__ = ["ActorUnavailable", "call", "task_error_cause"]

log = logging.getLogger(__name__)


class ActorUnavailable(DlnestError):
    """The actor called is dead or restarting (after any retries)."""


def task_error_cause(error: BaseException) -> BaseException:
    """The exception a remote call really raised: Ray wraps it in a ``RayTaskError`` whose ``cause`` it
    is; anything else is returned as it is."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def call(
    method: Any,
    *args: Any,
    retry_s: float = 0.0,
    unavailable: str = "the center is unavailable ({error}); retry in a few seconds",
    **kwargs: Any,
) -> Any:
    """``ray.get(method.remote(...))`` with a DlnestError raised remotely re-raised as itself, and an
    actor that is gone as :class:`ActorUnavailable` saying ``unavailable`` (``{error}``: Ray's error type).

    ``retry_s`` > 0 (only for calls that change nothing): while the actor is restarting, retry for up
    to that long. Ray restarts the center at once, but a handle taken before the restart can report it
    unavailable for a moment after it is back; a changing call is never retried, because Ray cannot say
    whether it ran."""
    import ray

    deadline = time.monotonic() + retry_s
    while True:
        try:
            return ray.get(method.remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as e:
            cause = task_error_cause(e)
            if isinstance(cause, DlnestError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as e:
            if time.monotonic() < deadline:
                log.debug("the actor is unavailable (%s): retrying", type(e).__name__)
                time.sleep(0.25)
                continue
            raise ActorUnavailable(unavailable.format(error=type(e).__name__)) from e
