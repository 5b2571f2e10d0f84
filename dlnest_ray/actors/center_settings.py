"""The center's settings operations (DLNest's changeDevices, changeDelay, changeMaxTaskPerDevice), mixed
into :class:`~dlnest_ray.actors.center.Center`, whose state lock, store, log and scheduler they use."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from ..devices import GpuInfo
from ..errors import DlnestError
from .store import CenterStore, LogBuffer

__all__ = ["SettingsOps"]


class SettingsOps:
    _lock: threading.RLock
    store: CenterStore
    log: LogBuffer

    def _readings(self) -> dict[str, tuple[GpuInfo, ...]]:  # pragma: no cover - provided by Center
        raise NotImplementedError

    def schedule(self) -> Any:  # pragma: no cover - provided by Center
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ settings
    def change_devices(self, enabled: list[str]) -> list[str]:
        """Enable exactly these ``node:gpuN`` labels (DLNest's changeDevices); returns the disabled ones."""
        readings = self._readings()
        with self._lock:
            labels = {f"{node}:gpu{g.index}" for node, infos in readings.items() for g in infos}
            unknown = sorted(set(enabled) - labels)
            if unknown:
                raise DlnestError(
                    f"unknown devices: {', '.join(unknown)} (known: {', '.join(sorted(labels))})"
                )
            self.store.settings.disabled = sorted(labels - set(enabled))
            self.store.save()
            self.log.write(f"enabled devices: {', '.join(sorted(enabled)) or 'none'}")
            disabled = list(self.store.settings.disabled)
        self.schedule()
        return disabled

    def change_delay(self, seconds: float) -> None:
        with self._lock:
            if seconds <= 0:
                raise DlnestError("the delay must be positive (seconds)")
            self.store.settings.delay_s = float(seconds)
            self.store.save()

    def change_max_task_per_device(self, n: int) -> None:
        with self._lock:
            if n < 1:
                raise DlnestError("max tasks per device must be at least 1")
            self.store.settings.max_tasks_per_device = int(n)
            self.store.save()
        self.schedule()

    def get_settings(self) -> dict[str, Any]:
        """Scheduling delay, max tasks per device, starvation bound, disabled devices, and whether ``down``
        is draining the center (nothing launches)."""
        with self._lock:
            return {**asdict(self.store.settings), "draining": self.store.draining}

    @property
    def delay_s(self) -> float:
        return self.store.settings.delay_s
