"""``AutoTensorboardScalar``: every value appended to the log's lists, as a TensorBoard scalar stepped by
its index in the list (DLNest 0.3's plugin; DLNest wrote only the values present at visualize time).

Rank 0 writes to ``<package>/tb/steps/`` (its own run folder beside the per-epoch scalars that the
``tensorboard`` config key writes to ``<package>/tb/``), tag = the log key, after every epoch and when
the run ends. A resumed run goes on from the lengths the checkpoint restored. Needs the
``tensorboard`` extra (``pip install 'dlnest-ray[tensorboard]'``); without it the run fails at its
start with that command.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..runtime.tensorboard import summary_writer_class
from ..savepack.layout import TB_STEPS_DIR, tb_steps_dir
from .base import Plugin, PluginContext

__all__ = ["STEPS_DIR", "DLNestPlugin"]

STEPS_DIR = TB_STEPS_DIR


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        item = value.item()
        return float(item) if isinstance(item, (numbers.Real, bool)) else None
    return None


class DLNestPlugin(Plugin):
    name: ClassVar[str] = "AutoTensorboardScalar"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(settings, context)
        writer_class = summary_writer_class()  # every rank: a missing package fails all ranks alike
        self._writer: Any = None
        if context.is_main:
            folder = tb_steps_dir(Path(context.package).resolve())
            self._writer = writer_class(log_dir=str(folder))
        self._written: dict[str, int] | None = None  # per key: how many values are in TensorBoard

    def run_started(self, log: Mapping[str, Any], resumed: bool) -> None:
        # a resumed log's values were written by the run before: go on from where it stopped
        self._written = (
            {str(k): len(v) for k, v in log.items() if isinstance(v, (list, tuple))} if resumed else {}
        )

    def _write(self, log: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        if self._written is None:  # no run_started (the model init was skipped): all is new
            self._written = {}
        for key, values in log.items():
            if not isinstance(values, (list, tuple)):
                continue
            start = self._written.get(str(key), 0)
            for index in range(start, len(values)):
                x = _number(values[index])
                if x is not None:
                    self._writer.add_scalar(str(key), x, index)
            self._written[str(key)] = len(values)
        self._writer.flush()

    def after_epoch(self, epoch: int, log: Mapping[str, Any]) -> None:
        self._write(log)

    def train_finished(self, log: Mapping[str, Any]) -> None:
        self._write(log)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
