"""Reading a node's GPUs: the ``DeviceProbe`` protocol, NVML, and a fake for GPU-less machines.

``NvmlProbe`` is the only place that imports ``pynvml``. ``FakeProbe`` reports ``K`` GPUs of ``MB``
each from ``DLNEST_RAY_FAKE_GPUS=KxMB`` (e.g. ``2x16000``), with free memory = total minus what
dlnest-ray has reserved on it, so the whole scheduling path runs on a CPU-only machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .errors import DlnestError

__all__ = [
    "FAKE_GPUS_ENV",
    "DeviceProbe",
    "FakeProbe",
    "GpuInfo",
    "NvmlProbe",
    "default_probe",
    "parse_fake_gpus",
]

FAKE_GPUS_ENV = "DLNEST_RAY_FAKE_GPUS"
_FAKE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    index: int
    name: str
    total_mb: int
    used_mb: int
    free_mb: int
    utilization: int | None = None  # percent
    processes: tuple[tuple[int, int], ...] = field(default_factory=tuple)  # (pid, MB)


class DeviceProbe(Protocol):
    """Reads the GPUs of this node. ``reserved_mb`` is what dlnest-ray reserved per GPU index."""

    def read(self, reserved_mb: Mapping[int, int] | None = None) -> tuple[GpuInfo, ...]: ...


def parse_fake_gpus(value: str) -> tuple[int, int]:
    m = _FAKE_RE.match(value)
    if not m or int(m[1]) < 0 or int(m[2]) <= 0:
        raise DlnestError(f"{FAKE_GPUS_ENV}={value!r}: expected COUNTxMB, for example 2x16000")
    return int(m[1]), int(m[2])


@dataclass(frozen=True, kw_only=True)
class FakeProbe:
    count: int
    total_mb: int
    name: str = "Fake GPU"

    @classmethod
    def from_env(cls, value: str) -> FakeProbe:
        count, mb = parse_fake_gpus(value)
        return cls(count=count, total_mb=mb)

    def read(self, reserved_mb: Mapping[int, int] | None = None) -> tuple[GpuInfo, ...]:
        reserved = reserved_mb or {}
        out = []
        for i in range(self.count):
            used = min(self.total_mb, max(0, int(reserved.get(i, 0))))
            out.append(
                GpuInfo(
                    index=i,
                    name=self.name,
                    total_mb=self.total_mb,
                    used_mb=used,
                    free_mb=self.total_mb - used,
                )
            )
        return tuple(out)


class NvmlProbe:
    """NVML readings; a node without NVML (no driver, no GPU) reports no GPUs."""

    def __init__(self) -> None:
        self._ok = False
        try:
            import pynvml

            pynvml.nvmlInit()
            self._ok = True
        except Exception:  # pynvml missing or no driver: a CPU-only node
            self._ok = False

    def read(self, reserved_mb: Mapping[int, int] | None = None) -> tuple[GpuInfo, ...]:
        if not self._ok:
            return ()
        import pynvml

        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            try:
                util: int | None = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except pynvml.NVMLError:
                util = None
            try:
                procs = tuple(
                    (int(p.pid), int((p.usedGpuMemory or 0) // 2**20))
                    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                )
            except pynvml.NVMLError:
                procs = ()
            out.append(
                GpuInfo(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_mb=int(mem.total // 2**20),
                    used_mb=int(mem.used // 2**20),
                    free_mb=int(mem.free // 2**20),
                    utilization=util,
                    processes=procs,
                )
            )
        return tuple(out)


def default_probe(environ: Mapping[str, str] | None = None) -> DeviceProbe:
    """``FakeProbe`` when ``DLNEST_RAY_FAKE_GPUS`` is set, else ``NvmlProbe``."""
    env = os.environ if environ is None else environ
    fake = env.get(FAKE_GPUS_ENV)
    if fake:
        return FakeProbe.from_env(fake)
    return NvmlProbe()
