"""TensorBoard scalars: each epoch's metrics row, also written to ``<package>/tb/`` (optional).

Enabled by the root-config key ``"tensorboard": true`` (the ``tensorboard`` extra must be installed:
``pip install 'dlnest-ray[tensorboard]'``). Rank 0 writes, per finished epoch, the same numbers that
go to ``metrics.parquet`` — every column but ``epoch``, ``step`` and ``wall_time`` — as scalars whose
global step is the epoch and whose wall time is the row's. Each package has its own ``tb/``, so
``tensorboard --logdir Saves`` shows one run per package. A resumed run appends a new event file to
the same folder and purges the events of epochs it trains again (a resume from an older checkpoint),
so TensorBoard agrees with ``metrics.parquet``.

``torch.utils.tensorboard`` (and through it ``tensorboard``) is imported only when the key is on.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DlnestError
from ..savepack import layout
from ..savepack.layout import TB_DIR
from ..savepack.metrics import BOOKKEEPING_COLUMNS

__all__ = ["CONFIG_KEY", "MISSING_PACKAGE", "TB_DIR", "EpochScalars", "enabled", "summary_writer_class"]

CONFIG_KEY = "tensorboard"
MISSING_PACKAGE = (
    "the config enables tensorboard but the tensorboard package is missing: "
    "pip install 'dlnest-ray[tensorboard]'"
)


def enabled(args: Mapping[str, Any]) -> bool:
    """Whether the merged config turns TensorBoard on; a value other than true/false is a ConfigError."""
    value = args.get(CONFIG_KEY, False)
    if not isinstance(value, bool):
        raise ConfigError(f'config key "{CONFIG_KEY}" must be true or false, not {value!r}')
    return value


def summary_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or the DlnestError that says how to install it."""
    try:
        # torch's module imports tensorboard too, but may already be cached in sys.modules: asking for
        # tensorboard itself first makes the answer depend on the package alone (importlib: it has no
        # type information, and mypy must pass where it is not installed)
        importlib.import_module("tensorboard")
    except ImportError:
        raise DlnestError(MISSING_PACKAGE) from None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # e.g. a tensorboard too old for this torch
        raise DlnestError(f"torch.utils.tensorboard cannot be imported ({e}): {MISSING_PACKAGE}") from None
    return SummaryWriter


class EpochScalars:
    """Rank 0's TensorBoard writer for one run segment: :meth:`add_epoch` per metrics row, then
    :meth:`close` (idempotent) on every exit path."""

    def __init__(self, writer: Any) -> None:
        self._writer: Any = writer

    @classmethod
    def for_run(
        cls, args: Mapping[str, Any], package: Path, *, main: bool, first_epoch: int, resume: bool
    ) -> EpochScalars | None:
        """The writer of a run segment starting at ``first_epoch``, or None when the config leaves
        TensorBoard off or this is not rank 0.

        Every rank checks the key and the package, so a missing ``tensorboard`` fails all ranks at the
        start of the run alike (:class:`DlnestError`) instead of rank 0 alone, mid-run. With ``resume``,
        events of epochs from ``first_epoch`` on, left by an abandoned branch, are purged.
        """
        if not enabled(args):
            return None
        writer_class = summary_writer_class()
        if not main:
            return None
        log_dir = layout.tb_dir(Path(package).resolve())  # absolute: user code may change the CWD
        return cls(writer_class(log_dir=str(log_dir), purge_step=first_epoch if resume else None))

    def add_epoch(self, row: Mapping[str, Any]) -> None:
        """Write the scalars of one metrics row (``epoch`` and ``wall_time`` keys required); flushed at
        once, so a running ``tensorboard`` sees each epoch when it ends."""
        if self._writer is None:
            return
        epoch, wall_time = int(row["epoch"]), float(row["wall_time"])
        for key, value in row.items():
            # the bookkeeping columns are no scalars of the log: each event's global step (the epoch) and
            # wall time carry them, and ``step`` would only clutter the dashboard
            if key in BOOKKEEPING_COLUMNS or value is None:
                continue
            self._writer.add_scalar(str(key), float(value), epoch, wall_time)
        self._writer.flush()

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
