"""A local Ray with logical GPUs, the fake device probe and a center: the module fixture of the e2e tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["local_client"]


@contextmanager
def local_client(home: Path, *, num_cpus: int) -> Iterator[Any]:
    """A client of a center on a fresh local Ray (``num_cpus``, 2 logical GPUs, the fake probe 2 x 16000
    MB, a 5 s cancel grace); Ray is shut down and the variables removed afterwards."""
    import ray

    from dlnest_ray.actors.center_actor import get_or_create_center
    from dlnest_ray.actors.client import Client
    from dlnest_ray.actors.names import NAMESPACE

    os.environ["DLNEST_RAY_FAKE_GPUS"] = "2x16000"  # inherited by the workers Ray starts below
    os.environ["DLNEST_RAY_CANCEL_GRACE_S"] = "5"
    ray.init(
        num_cpus=num_cpus, num_gpus=2, namespace=NAMESPACE, include_dashboard=False, logging_level="ERROR"
    )
    try:
        yield Client(get_or_create_center(str(home)))
    finally:
        ray.shutdown()
        os.environ.pop("DLNEST_RAY_FAKE_GPUS", None)
        os.environ.pop("DLNEST_RAY_CANCEL_GRACE_S", None)
