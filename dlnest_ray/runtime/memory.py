"""A rank's GPU memory: the measured peak, the cap, and the one line an out-of-memory failure ends with.

A :class:`MemoryMeter` measures the peak per GPU in MB since its last :meth:`~MemoryMeter.reset`, CUDA
context included, and caps the process at its reservation (``set_cap``). The trainer reads it once per
epoch, never per step.

* :class:`CudaMeter` (a CUDA device): torch's ``max_memory_reserved`` plus the CUDA context. The context
  is NVML's used memory of this process less torch's ``memory_reserved`` when NVML sees the process (not
  in every container: another PID namespace), else :data:`DEFAULT_CONTEXT_MB`. The cap goes to torch's
  caching allocator: ``set_per_process_memory_fraction((cap - context) / total, device)``; an allocation
  over it raises torch's ``OutOfMemoryError`` in this process.
* :class:`FakeMeter` (no CUDA, ``DLNEST_RAY_FAKE_GPUS`` set and ``CUDA_VISIBLE_DEVICES`` not empty): the
  run "allocates" what the config key ``fake_gpu_mb`` says (an int, or a list indexed by epoch: epoch
  ``i`` uses item ``min(i, len - 1)``) after each epoch's training loop. Peak = allocation +
  :data:`FAKE_CONTEXT_MB`. An allocation whose peak exceeds the cap (or the fake GPU's size) raises
  torch's ``OutOfMemoryError`` as the CUDA allocator would, saying ``Tried to allocate N MiB`` for the
  part beyond the limit (the allocator fills up to it first).

:func:`meter_for` picks one (None on a plain CPU run). Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from ..devices import FAKE_GPUS_ENV, parse_fake_gpus
from ..errors import DlnestError

__all__ = [
    "DEFAULT_CONTEXT_MB",
    "FAKE_CONTEXT_MB",
    "FAKE_GPU_MB_KEY",
    "CudaMeter",
    "FakeMeter",
    "MemoryMeter",
    "fake_allocations",
    "gpu_label",
    "meter_for",
    "out_of_memory_error",
    "out_of_memory_line",
    "out_of_memory_peak",
    "suggested_memory_mb",
    "tried_to_allocate_mb",
]

FAKE_CONTEXT_MB = 300  # the fake CUDA context of every fake rank
DEFAULT_CONTEXT_MB = 500  # a CUDA context's usual size when NVML cannot see this process
FAKE_GPU_MB_KEY = "fake_gpu_mb"
_MB = 2**20
_TRIED_RE = re.compile(r"Tried to allocate ([0-9]+(?:\.[0-9]+)?) ?(bytes|B|KiB|MiB|GiB|TiB)")
_UNITS = {"bytes": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


class MemoryMeter(Protocol):
    """One rank's GPU memory meter (see the module doc)."""

    @property
    def gpu(self) -> str:
        """The GPU as the out-of-memory line names it: ``gpu<physical index>``."""
        ...

    @property
    def cap_mb(self) -> int | None:
        """The cap now in force (the rank's reservation), or None."""
        ...

    def peak_mb(self) -> int:
        """The peak in MB since the last :meth:`reset` (or since the start), context included."""
        ...

    def reset(self) -> None:
        """Start a new peak window (the trainer calls it after each epoch's measurement)."""
        ...

    def set_cap(self, mb: int | None) -> None:
        """Limit this process to ``mb`` on its GPU, context included (None: no cap)."""
        ...

    def after_training(self, epoch: int) -> None:
        """Called after the epoch's training loop, before validation: where a fake allocates."""
        ...


# ------------------------------------------------------------------------------------------------ pure
def gpu_label(environ: Mapping[str, str], device_index: int = 0) -> str:
    """``gpu<N>``: N = the first entry of ``CUDA_VISIBLE_DEVICES`` (the physical GPU a rank's supervisor
    gave it), else the torch device index."""
    first = environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return f"gpu{first}" if first else f"gpu{device_index}"


def fake_allocations(args: Mapping[str, Any]) -> tuple[int, ...]:
    """The config's ``fake_gpu_mb`` as per-epoch MB (an int gives one item; absent: ``(0,)``).
    Raises :class:`DlnestError` for anything but a non-negative int or a non-empty list of them."""
    value = args.get(FAKE_GPU_MB_KEY, 0)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
        raise DlnestError(
            f"config key {FAKE_GPU_MB_KEY} must be MB as a whole number >= 0 or a non-empty list of them, "
            f"not {value!r}"
        )
    return tuple(items)


def tried_to_allocate_mb(message: str) -> int | None:
    """The MB of torch's ``Tried to allocate 20.00 MiB`` in an out-of-memory message (rounded up)."""
    m = _TRIED_RE.search(message)
    if m is None:
        return None
    return math.ceil(float(m[1]) * _UNITS[m[2]] / _MB)


def out_of_memory_peak(meter_peak: int | None, cap_mb: int | None, message: str) -> int | None:
    """The peak an out-of-memory failure reports: the meter's, and at least the cap plus the allocation
    that failed when torch's message says how much it tried to allocate."""
    tried = tried_to_allocate_mb(message)
    base = cap_mb if cap_mb is not None else meter_peak
    grown = None if tried is None or base is None else base + tried
    candidates = [p for p in (meter_peak, grown) if p is not None]
    return max(candidates) if candidates else None


def suggested_memory_mb(peak_mb: int, margin: float, n_gpus: int) -> int:
    """What to resubmit with: ``ceil(peak × margin / 100) × 100`` per GPU, times the run's GPUs."""
    hundreds = math.ceil(round(peak_mb * margin / 100, 6))  # 6000 × 1.15 is 6900, not 6900.000000001
    return hundreds * 100 * max(1, n_gpus)


def out_of_memory_line(
    *, who: str, gpu: str, cap_mb: int | None, peak_mb: int | None, margin: float, n_gpus: int
) -> str:
    """The one line a run that ran out of GPU memory fails with, e.g. ``T_0007 ran out of its 6000 MB on
    gpu0 (peak 6030 MB): resubmit with --memory 7000 or more``."""
    where = f"ran out of its {cap_mb} MB on {gpu}" if cap_mb is not None else f"ran out of memory on {gpu}"
    if peak_mb is None:
        return f"{who} {where}: resubmit with more --memory"
    more = suggested_memory_mb(peak_mb, margin, n_gpus)
    return f"{who} {where} (peak {peak_mb} MB): resubmit with --memory {more} or more"


def out_of_memory_error(e: BaseException) -> BaseException | None:
    """Torch's out-of-memory error when ``e`` is one or was raised from one (``raise ... from oom``),
    else None."""
    for candidate in (e, e.__cause__):
        if isinstance(candidate, torch.OutOfMemoryError):
            return candidate
    return None


# ------------------------------------------------------------------------------------------------ fake
class _MeterBase:
    """What both meters keep: the GPU's label (``gpu3``) and the cap applied last (None: none)."""

    _gpu: str
    _cap: int | None

    @property
    def gpu(self) -> str:
        return self._gpu

    @property
    def cap_mb(self) -> int | None:
        return self._cap


class FakeMeter(_MeterBase):
    """The fake meter (module doc): each epoch's allocation is its working set, released at
    :meth:`reset`, so epoch ``i``'s peak is ``allocations[i] + FAKE_CONTEXT_MB``."""

    def __init__(self, *, allocations: Sequence[int], total_mb: int, gpu: str = "gpu0") -> None:
        self.allocations = tuple(allocations) or (0,)
        self.total_mb = total_mb
        self._gpu = gpu
        self._cap: int | None = None
        self._peak = FAKE_CONTEXT_MB

    def peak_mb(self) -> int:
        return self._peak

    def reset(self) -> None:
        self._peak = FAKE_CONTEXT_MB

    def set_cap(self, mb: int | None) -> None:
        self._cap = mb

    def after_training(self, epoch: int) -> None:
        """Allocate epoch ``epoch``'s MB; over the limit (cap, else the GPU) raises ``OutOfMemoryError``
        after filling up to it (the peak then equals the limit, as torch's would)."""
        want = self.allocations[min(epoch, len(self.allocations) - 1)] + FAKE_CONTEXT_MB
        limit = self.total_mb if self._cap is None else min(self._cap, self.total_mb)
        if want > limit:
            self._peak = max(self._peak, limit)
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (fake). Tried to allocate {want - limit}.00 MiB. {self.gpu} has a "
                f"total capacity of {self.total_mb}.00 MiB; this process is limited to {limit} MiB."
            )
        self._peak = max(self._peak, want)


# ------------------------------------------------------------------------------------------------ CUDA
class CudaMeter(_MeterBase):
    """Torch's allocator on ``device`` plus the CUDA context (module doc)."""

    def __init__(self, device: torch.device, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.device = device
        self._gpu = gpu_label(env, device.index or 0)
        self._cap: int | None = None
        self._context: int | None = None

    def context_mb(self) -> int:
        """The CUDA context in MB as last measured (:meth:`measure_context`), else
        :data:`DEFAULT_CONTEXT_MB`."""
        return DEFAULT_CONTEXT_MB if self._context is None else self._context

    def measure_context(self) -> int:
        """Measure the context now: NVML's used memory of this process less torch's reserved memory
        (libraries loaded later, cuDNN's and cuBLAS's, count too); kept when NVML does not see it."""
        used = _nvml_used_mb(os.getpid(), self.device)
        if used is not None:
            reserved = math.ceil(torch.cuda.memory_reserved(self.device) / _MB)
            self._context = max(0, used - reserved)
        return self.context_mb()

    def peak_mb(self) -> int:
        """Torch's peak reserved memory since the last reset plus the context (measured now: once per
        epoch, never per step)."""
        return math.ceil(torch.cuda.max_memory_reserved(self.device) / _MB) + self.measure_context()

    def reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def set_cap(self, mb: int | None) -> None:
        _free, total = torch.cuda.mem_get_info(self.device)  # creates the context NVML then sees
        fraction = 1.0 if mb is None else (mb - self.measure_context()) * _MB / total
        torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.0, fraction)), self.device)
        self._cap = mb

    def after_training(self, epoch: int) -> None:
        del epoch  # the real allocator needs no help


def _nvml_used_mb(pid: int, device: torch.device) -> int | None:
    """NVML's used memory of process ``pid`` on ``device`` in MB, or None when NVML (or the process in
    its view) is not there. The device is found by UUID, so CUDA's and NVML's orders may differ."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no pynvml, no driver
        return None
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handles = [pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")]
    except Exception:  # an older torch or driver: look for the process on every GPU
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    try:
        for h in handles:
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if int(p.pid) == pid and p.usedGpuMemory:
                    return math.ceil(int(p.usedGpuMemory) / _MB)
    except Exception:  # NVML errors: no figure
        return None
    finally:
        with contextlib.suppress(Exception):  # already shut down: nothing to release
            pynvml.nvmlShutdown()
    return None


def meter_for(device: Any, args: Mapping[str, Any], environ: Mapping[str, str]) -> MemoryMeter | None:
    """The meter of a rank on ``device``: :class:`CudaMeter` on CUDA, :class:`FakeMeter` with fake GPUs
    (module doc), else None (a plain CPU run measures nothing). A bad ``fake_gpu_mb`` or
    ``DLNEST_RAY_FAKE_GPUS`` raises :class:`DlnestError`."""
    if getattr(device, "type", "") == "cuda":
        return CudaMeter(device, environ)
    fake = environ.get(FAKE_GPUS_ENV, "")
    if fake and environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        _count, total = parse_fake_gpus(fake)
        return FakeMeter(allocations=fake_allocations(args), total_mb=total, gpu=gpu_label(environ))
    return None
