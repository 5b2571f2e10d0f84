"""What the center keeps of a sweep (issue 15): :class:`SweepRecord`, persisted in ``center.json`` under
``"sweeps"``, and :class:`SweepInfo`, the record with its trials' task records, as ``get_sweep`` answers.

A sweep is one unit (``S_0001``) whose trials are ordinary training tasks: each its own save package
(in the sweep's folder), its values applied to the config. The record says how the sweep was asked for
(the spec as :meth:`~dlnest_ray.sweeps.space.SweepSpec.to_dict` writes it, with the seed actually used)
and which task runs which values; the trials' states live in their task records.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..tasks import TaskKind, TaskRecord

__all__ = ["SWEEP_PREFIX", "SweepInfo", "SweepRecord", "SweepStop", "SweepTrial", "is_sweep_id"]

SWEEP_PREFIX = "S_"


def is_sweep_id(text: str) -> bool:
    """Whether ``text`` is a sweep id (``S_`` and digits): neither a task id nor a path."""
    return text.startswith(SWEEP_PREFIX) and text[len(SWEEP_PREFIX) :].isdigit() and TaskKind.of(text) is None


@dataclass(frozen=True, kw_only=True)
class SweepTrial:
    """One trial: its task, the values it runs with (dotted key → value), their short label, its package."""

    task_id: str
    values: dict[str, Any]
    label: str
    package: str

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "values": dict(self.values),
            "label": self.label,
            "package": self.package,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepTrial:
        return cls(
            task_id=str(d["task_id"]),
            values=dict(d.get("values") or {}),
            label=str(d.get("label") or ""),
            package=str(d.get("package") or ""),
        )


@dataclass(frozen=True, kw_only=True)
class SweepStop:
    """A stop rule's decision: ``task_id`` stopped early at time ``at`` for ``reason``."""

    task_id: str
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "reason": self.reason, "at": self.at}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepStop:
        return cls(task_id=str(d["task_id"]), reason=str(d.get("reason") or ""), at=float(d.get("at") or 0.0))


@dataclass(frozen=True, kw_only=True)
class SweepRecord:
    """One sweep as the center keeps it (JSON round trip: :meth:`to_json`, :meth:`from_json`).

    ``spec``: the sweep's spec (``space``, ``trials``, ``seed`` — the one used, chosen when none was
    given and trials were drawn —, ``stop``, ``name``, ``new_keys``); ``stop``: the stop rule as text
    ("" for none); ``varying``: the keys whose values differ between trials (what tables show);
    ``folder``: the folder holding the trials' packages and ``_sweep.json``; ``stops``: the rule's
    decisions so far, in order."""

    sweep_id: str
    name: str = ""
    config_path: str
    freq_path: str = ""
    folder: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    stop: str = ""
    trials: tuple[SweepTrial, ...] = ()
    varying: tuple[str, ...] = ()
    created_at: float
    stops: tuple[SweepStop, ...] = ()

    @property
    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.trials]

    @property
    def seed(self) -> int | None:
        seed = self.spec.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def trial(self, task_id: str) -> SweepTrial | None:
        return next((t for t in self.trials if t.task_id == task_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "name": self.name,
            "config_path": self.config_path,
            "freq_path": self.freq_path,
            "folder": self.folder,
            "spec": json.loads(json.dumps(self.spec)),  # a deep copy, plain JSON
            "stop": self.stop,
            "trials": [t.to_json() for t in self.trials],
            "varying": list(self.varying),
            "created_at": self.created_at,
            "stops": [s.to_json() for s in self.stops],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepRecord:
        return cls(
            sweep_id=str(d["sweep_id"]),
            name=str(d.get("name") or ""),
            config_path=str(d["config_path"]),
            freq_path=str(d.get("freq_path") or ""),
            folder=str(d.get("folder") or ""),
            spec=dict(d.get("spec") or {}),
            stop=str(d.get("stop") or ""),
            trials=tuple(SweepTrial.from_json(t) for t in d.get("trials") or ()),
            varying=tuple(str(k) for k in d.get("varying") or ()),
            created_at=float(d.get("created_at") or 0.0),
            stops=tuple(SweepStop.from_json(s) for s in d.get("stops") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class SweepInfo:
    """A sweep and its trials' task records now (``tasks`` in the order of ``record.trials``; a trial
    whose record is gone is left out)."""

    record: SweepRecord
    tasks: tuple[TaskRecord, ...]

    @property
    def sweep_id(self) -> str:
        return self.record.sweep_id

    def counts(self) -> dict[str, int]:
        """How many trials are in each status (``{"RUNNING": 2, "PENDING": 4}``), most common first."""
        return dict(Counter(str(t.status) for t in self.tasks).most_common())

    @property
    def done(self) -> bool:
        """Every trial has ended (succeeded, failed, cancelled or stopped)."""
        return all(t.status.is_terminal() for t in self.tasks)

    def to_json(self) -> dict[str, Any]:
        """The record's JSON with each trial's task row under ``"tasks"`` and ``"counts"``."""
        return {**self.record.to_json(), "tasks": [t.to_row() for t in self.tasks], "counts": self.counts()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepInfo:
        """The info :meth:`to_json` wrote (how it travels over the center's local socket)."""
        return cls(
            record=SweepRecord.from_json(d),
            tasks=tuple(TaskRecord.from_json(t) for t in d.get("tasks") or ()),
        )
