"""Where a rank runs: device choice, the DDP process group, seeding and RNG state capture.

DDP is on when ``RANK``, ``WORLD_SIZE`` (> 1), ``MASTER_ADDR`` and ``MASTER_PORT`` are set (the run
supervisor sets them; a test may too). Backend: nccl on GPUs, gloo on CPU, always with a timeout, so a
rank whose peer died fails instead of hanging (DLNest's leaked-process bug).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..errors import DlnestError
from .status import EnvType, RunningStatus

__all__ = [
    "DistEnv",
    "all_reduce",
    "barrier",
    "capture_rng",
    "choose_device",
    "destroy_process_group",
    "dist_env_from",
    "init_process_group",
    "restore_rng",
    "seed_everything",
]

DEFAULT_PG_TIMEOUT_S = 600.0
RELEASE_WAIT_S = 2.0  # how long all_reduce waits for gloo's thread to let go of a tensor

_log = logging.getLogger(__name__)

# torch leaves this one unannotated; its contract is documented: whether CUDA has been initialised
_cuda_is_initialized = cast(Callable[[], bool], torch.cuda.is_initialized)


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int


def dist_env_from(environ: Mapping[str, str]) -> DistEnv | None:
    """The DDP rendezvous described by ``environ``, or None when this is not a multi-rank run."""
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(k in environ for k in keys):
        return None
    try:
        world = int(environ["WORLD_SIZE"])
        rank = int(environ["RANK"])
        local = int(environ.get("LOCAL_RANK", rank))
        port = int(environ["MASTER_PORT"])
    except ValueError as e:
        raise DlnestError(f"bad DDP environment variable: {e}") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise DlnestError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(
        rank=rank, local_rank=local, world_size=world, master_addr=environ["MASTER_ADDR"], master_port=port
    )


def choose_device(*, cpu: bool, gpus: tuple[int, ...] | None, dist: DistEnv | None) -> RunningStatus:
    """Pick the env type and device. ``gpus`` restricts visible GPUs (set before CUDA starts)."""
    if gpus and not cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    use_cuda = not cpu and torch.cuda.is_available()
    if gpus and not cpu and not use_cuda:
        raise DlnestError(
            f"GPU {','.join(map(str, gpus))} was asked for but CUDA is not available; use --cpu"
        )
    if dist is not None:
        if use_cuda:
            # A supervisor usually exposes one GPU per rank (CUDA_VISIBLE_DEVICES=<index>): that is cuda:0.
            device = torch.device("cuda", dist.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        return RunningStatus(
            env=EnvType.DDP,
            device=device,
            rank=dist.rank,
            local_rank=dist.local_rank,
            world_size=dist.world_size,
        )
    if not use_cuda:
        return RunningStatus(env=EnvType.CPU, device=torch.device("cpu"))
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    env = EnvType.GPUS if gpus and len(gpus) > 1 else EnvType.GPU
    return RunningStatus(env=env, device=device)


def init_process_group(dist: DistEnv, status: RunningStatus, timeout_s: float = DEFAULT_PG_TIMEOUT_S) -> None:
    import torch.distributed as tdist

    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    backend = "nccl" if status.device is not None and status.device.type == "cuda" else "gloo"
    tdist.init_process_group(
        backend,
        init_method=f"tcp://{dist.master_addr}:{dist.master_port}",
        rank=dist.rank,
        world_size=dist.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def barrier(status: RunningStatus) -> None:
    if status.env is EnvType.DDP:
        import torch.distributed as tdist

        if status.device is not None and status.device.type == "cuda":
            tdist.barrier(device_ids=[status.device.index])
        else:
            tdist.barrier()


def all_reduce(t: torch.Tensor, op: Any) -> None:
    """All-reduce ``t`` in place (every rank must call it) and return only once the collective has let
    go of ``t``, so that it is freed here, by the caller, and never by gloo's worker thread.

    Why: gloo runs a collective on a thread of its own, which drops its reference to the tensor a
    moment after ``wait`` returns. If the caller has dropped ``t`` by then, that thread frees ``t``'s
    Python object and needs the GIL for it; when the rank's process is already finalizing (a run's
    last collective, then exit), Python ends that thread inside a C++ destructor and the process
    aborts ("terminate called without an active exception", SIGABRT after a successful run). NCCL
    tensors live on the GPU and are released by NCCL's own watchdog, so only CPU tensors wait.
    """
    import torch.distributed as tdist

    work = tdist.all_reduce(t, op=op, async_op=True)
    assert work is not None  # async_op=True always returns the work
    work.wait()
    del work
    if t.device.type != "cpu":
        return
    deadline = time.monotonic() + RELEASE_WAIT_S
    # torch leaves _use_count (the tensor's C++ reference count) out of its stubs
    while t._use_count() > 1:  # type: ignore[attr-defined]  # gloo's thread still holds it
        if time.monotonic() >= deadline:
            _log.debug("gloo still holds an all-reduce tensor after %.1f s; going on", RELEASE_WAIT_S)
            return
        time.sleep(0.0002)  # releases the GIL, which gloo's thread may be waiting for


def destroy_process_group() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and _cuda_is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    import numpy as np

    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
