"""Records that cross the center ↔ client boundary besides :class:`~dlnest_ray.tasks.TaskRecord`: a GPU
as the center reports it, the center's settings, and its state. Pure data; ``to_json()`` is the form
the CLI's ``--json`` prints (an interface: keys are only ever added)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .scheduling.specs import DEFAULT_MARGIN

__all__ = ["CenterState", "DeviceInfo", "SettingsInfo"]


def _json(record: Any) -> dict[str, Any]:
    """A record's fields as JSON values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(record).items()}


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """One GPU of one node: memory, what dlnest-ray reserved on it, its tasks, whether it is enabled."""

    node: str
    gpu: int
    total_mb: int
    free_mb: int
    reserved_mb: int
    tasks: tuple[str, ...] = ()
    enabled: bool = True

    @property
    def label(self) -> str:
        return f"{self.node}:gpu{self.gpu}"

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True, kw_only=True)
class SettingsInfo:
    """The center's settings (``config``), and whether ``down`` is draining it."""

    delay_s: float
    max_tasks_per_device: int
    starvation_s: float
    margin: float = DEFAULT_MARGIN
    retries: int = 2  # a run's retries by default (`config --retries`)
    disabled: tuple[str, ...] = field(default_factory=tuple)
    draining: bool = False
    notify_webhook: str = ""  # the cluster's default webhook, as scheme://host/… (it may hold a token)

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True, kw_only=True)
class CenterState:
    """What ``tasks`` says besides its rows."""

    draining: bool
    authenticated: bool
