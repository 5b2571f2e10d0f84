"""``AutoTensorboardScalar``: every value appended to the log's lists, as a TensorBoard scalar stepped by
its index in the list (DLNest 0.3's plugin; DLNest wrote only the values present at visualize time).

Rank 0 writes to ``<package>/tb/steps/`` (its own run folder beside the per-epoch scalars that the
``tensorboard`` config key writes to ``<package>/tb/``), tag = the log key, after every epoch and when
the run ends. A resumed run goes on from the lengths the checkpoint restored (events the run before
wrote past them are purged and written again). Needs the
``tensorboard`` extra (``pip install 'dlnest-ray[tensorboard]'``); without it the run fails at its
start with that command.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..runtime.tensorboard import summary_writer_class
from ..savepack.layout import TB_STEPS_DIR, tb_steps_dir
from ..savepack.metrics import scalar_value
from .base import Plugin, PluginContext

__all__ = ["STEPS_DIR", "DLNestPlugin"]

STEPS_DIR = TB_STEPS_DIR


class DLNestPlugin(Plugin):
    name: ClassVar[str] = "AutoTensorboardScalar"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(settings, context)
        self._writer_class = summary_writer_class()  # every rank: a missing package fails all ranks alike
        self._folder = tb_steps_dir(Path(context.package).resolve())  # absolute: user code may chdir
        self._writer: Any = None  # made at the run's start (rank 0 only), once it is known where it starts
        self._written: dict[str, int] | None = None  # per key: how many values are in TensorBoard

    def run_started(self, log: Mapping[str, Any], resumed: bool) -> None:
        # A resumed log holds what the checkpoint restored; the run before may have written further values
        # after that checkpoint. Those events are purged (``purge_step``: every step from the shortest
        # restored list on) and the values from there on are written again, so no step appears twice.
        lengths = {str(k): len(v) for k, v in log.items() if isinstance(v, (list, tuple))}
        purge = min(lengths.values()) if resumed and lengths else None
        self._written = {k: min(n, purge) for k, n in lengths.items()} if purge is not None else {}
        self._open(purge)

    def _open(self, purge_step: int | None) -> None:
        if self._writer is None and self.context.is_main:
            self._writer = self._writer_class(log_dir=str(self._folder), purge_step=purge_step)

    def _write(self, log: Mapping[str, Any]) -> None:
        if self._written is None:  # no run_started (the model init was skipped): all is new
            self._written = {}
            self._open(None)
        if self._writer is None:
            return
        for key, values in log.items():
            if not isinstance(values, (list, tuple)):
                continue
            start = self._written.get(str(key), 0)
            for index in range(start, len(values)):
                x = scalar_value(values[index])
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
