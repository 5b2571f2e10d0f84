"""The plugin machinery (plugins/base.py) and AutoTensorboardScalar's resume, without a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import dlnest_ray.plugins.AutoTensorboardScalar as auto_tb
from dlnest_ray.plugins.base import Plugin, PluginContext, PluginSet
from dlnest_ray.runtime.status import RunningStatus


def _context(tmp_path: Path) -> PluginContext:
    return PluginContext(args={}, package=tmp_path, status=RunningStatus())


class _Flaky(Plugin):
    name = "Flaky"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        super().__init__(settings, context)
        self.calls: list[str] = []

    def after_step(self, epoch: int, iter: int, log: Mapping[str, Any]) -> None:
        self.calls.append("after_step")
        raise ValueError("broken after_step")

    def after_epoch(self, epoch: int, log: Mapping[str, Any]) -> None:
        self.calls.append("after_epoch")

    def close(self) -> None:
        self.calls.append("close")
        raise OSError("broken close")


def test_a_failing_hook_is_shown_once_with_its_traceback_and_not_called_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky, other = _Flaky({}, _context(tmp_path)), _Flaky({}, _context(tmp_path))
    plugins = PluginSet([flaky, other])
    for step in range(5):
        plugins.after_step(0, step, {})
    plugins.after_epoch(0, {})
    plugins.close()
    plugins.close()  # close is always called, even after it failed
    out = capsys.readouterr().out
    assert out.count("plugin Flaky failed in after_step") == 2  # once per plugin, not once per step
    assert "Traceback (most recent call last)" in out and "ValueError: broken after_step" in out
    assert flaky.calls == ["after_step", "after_epoch", "close", "close"]
    assert other.calls == flaky.calls


class _Writer:
    made: ClassVar[list[_Writer]] = []

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars: list[tuple[str, float, int]] = []
        _Writer.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def fake_writer(monkeypatch: pytest.MonkeyPatch) -> type[_Writer]:
    _Writer.made = []
    monkeypatch.setattr(auto_tb, "summary_writer_class", lambda: _Writer)
    return _Writer


def test_a_resumed_run_purges_what_the_run_before_wrote_past_the_checkpoint(
    tmp_path: Path, fake_writer: type[_Writer]
) -> None:
    plugin = auto_tb.DLNestPlugin({}, _context(tmp_path))
    log: dict[str, Any] = {"loss": [0.9, 0.8, 0.7, 0.6], "acc": [0.5, 0.6], "note": "x"}
    plugin.run_started(log, resumed=True)  # the checkpoint restored 4 losses and 2 accuracies
    (writer,) = fake_writer.made
    assert writer.purge_step == 2 and Path(writer.log_dir) == tmp_path.resolve() / "tb" / "steps"
    log["acc"].append(np.float32(0.75))
    log["loss"].append(np.array([0.5]))  # a one-element array counts as its number
    plugin.after_epoch(0, log)
    assert sorted(writer.scalars) == sorted(
        [("loss", 0.7, 2), ("loss", 0.6, 3), ("loss", 0.5, 4), ("acc", 0.75, 2)]
    )  # from the purge step on, each step once


def test_a_fresh_run_purges_nothing_and_writes_every_value(
    tmp_path: Path, fake_writer: type[_Writer]
) -> None:
    plugin = auto_tb.DLNestPlugin({}, _context(tmp_path))
    log: dict[str, Any] = {"loss": [1.0]}  # a value the model's init put there is written too
    plugin.run_started(log, resumed=False)
    log["loss"].append(True)
    plugin.after_epoch(0, log)
    (writer,) = fake_writer.made
    assert writer.purge_step is None and writer.scalars == [("loss", 1.0, 0), ("loss", 1.0, 1)]
