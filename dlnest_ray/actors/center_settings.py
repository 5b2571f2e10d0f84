"""The center's settings operations (DLNest's changeDevices, changeDelay, changeMaxTaskPerDevice).

A part of :class:`~dlnest_ray.actors.center.Center` by composition: the center hands it its state lock,
store, log, a device reader and its scheduler, and answers the settings calls through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..checks import checked_retries
from ..devices import GpuInfo
from ..errors import DlnestError
from ..records import SettingsInfo
from .notify import NotifyStore, check_webhook, redact_url
from .store import CenterStore, LogBuffer

__all__ = ["CenterSettingsOps"]


class CenterSettingsOps:
    """Reads and changes the settings in ``store``; ``schedule`` runs a pass after a change that may let
    a task start (it is called without the state lock held)."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        store: CenterStore,
        log: LogBuffer,
        readings: Callable[[], dict[str, tuple[GpuInfo, ...]]],
        schedule: Callable[[], Any],
        notify: NotifyStore | None = None,
    ) -> None:
        self._lock, self.store, self.log = lock, store, log
        self.notify = notify if notify is not None else NotifyStore(store.home)
        self._readings, self._schedule = readings, schedule

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
        self._schedule()
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
        self._schedule()

    def change_margin(self, margin: float) -> None:
        """Right-sized reservations become the measured peak × ``margin`` (at least 1)."""
        with self._lock:
            if not margin >= 1:
                raise DlnestError(
                    f"the margin must be 1 or more (got {margin:g}): a reservation never goes below the peak"
                )
            self.store.settings.margin = float(margin)
            self.store.save()
            self.log.write(f"memory margin: {margin:g}")

    def change_retries(self, retries: int) -> None:
        """A run's retries when neither ``--retries`` nor its config's ``retries`` key says (>= 0)."""
        number = checked_retries(retries, "the default retries")
        with self._lock:
            self.store.settings.retries = number
            self.store.save()
            self.log.write(f"default retries: {number}")

    def change_notify_webhook(self, url: str) -> None:
        """The cluster's default webhook ("" clears it): kept in the private notify store, not in
        ``center.json``; shown and logged only as ``scheme://host/…`` (a webhook URL may hold a token)."""
        url = check_webhook(url, "the notify webhook") if url else ""
        with self._lock:
            self.notify.set_webhook(url)
            self.log.write(f"notify webhook: {redact_url(url) or 'none'}")

    def get_settings(self) -> SettingsInfo:
        """Scheduling delay, max tasks per device, starvation bound, disabled devices, and whether ``down``
        is draining the center (nothing launches)."""
        with self._lock:
            s = self.store.settings
            return SettingsInfo(
                delay_s=s.delay_s,
                max_tasks_per_device=s.max_tasks_per_device,
                starvation_s=s.starvation_s,
                margin=s.margin,
                retries=s.retries,
                disabled=tuple(s.disabled),
                draining=self.store.draining,
                notify_webhook=redact_url(self.notify.webhook),
            )
