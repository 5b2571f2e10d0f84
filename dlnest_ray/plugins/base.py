"""How the trainer runs plugins: the hooks a plugin may have, what it is given, one set per run.

A plugin is a :class:`Plugin` subclass named ``DLNestPlugin`` in its module (DLNest's convention, so
``from dlnest_ray.plugins.MailsNote import DLNestPlugin`` keeps working). The trainer makes one
instance per plugin the config lists and calls its hooks through a :class:`PluginSet`, which logs a
plugin's failure and goes on: a plugin never fails a run.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..runtime.status import RunningStatus
from . import check_plugins

__all__ = ["Plugin", "PluginContext", "PluginSet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PluginContext:
    """What a plugin knows of its run: the merged config (the users' copy), the package folder, the
    running status (rank, epoch...) and the queued task's id (None in the foreground)."""

    args: Mapping[str, Any]
    package: Path
    status: RunningStatus
    task_id: str | None = None

    @property
    def is_main(self) -> bool:
        return self.status.is_main


class Plugin:
    """Base of the plugins: every hook is a no-op. ``settings`` is ``plugins_config.<name>`` merged
    over the plugin's :attr:`defaults`."""

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        self.settings = {**self.defaults, **settings}
        self.context = context

    def before_all(self) -> None:
        """Before the life cycle's ``before_all``, on every rank."""

    def run_started(self, log: Mapping[str, Any], resumed: bool) -> None:
        """The components are built (a resumed run's log restored); the loop starts, on every rank."""

    def after_step(self, epoch: int, iter: int, log: Mapping[str, Any]) -> None:
        """After every training step, on every rank."""

    def after_epoch(self, epoch: int, log: Mapping[str, Any]) -> None:
        """After an epoch's save and metrics row, on every rank."""

    def train_finished(self, log: Mapping[str, Any]) -> None:
        """The training loop ended normally (DLNest's ``ATrain``), on every rank."""

    def train_aborting(self, exception: BaseException) -> None:
        """The run failed with ``exception`` (not a requested stop), on every rank."""

    def close(self) -> None:
        """The run is over, whatever happened: release what the plugin holds (bounded in time)."""


class PluginSet:
    """The plugins of one run, in the config's order; hooks are called on each, failures logged."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self.plugins = plugins
        self._failed: set[tuple[int, str]] = set()  # (plugin's index, hook) that raised: not called again

    @classmethod
    def load(cls, args: Mapping[str, Any], context: PluginContext) -> PluginSet:
        names = check_plugins(args, "the run's config")
        settings = args.get("plugins_config") or {}
        plugins: list[Plugin] = []
        for name in names:
            module = importlib.import_module(f"{__package__}.{name}")
            plugin_class: type[Plugin] = module.DLNestPlugin
            plugins.append(plugin_class(settings.get(name) or {}, context))
        return cls(plugins)

    def _each(self, hook: str, run: Callable[[Plugin], None]) -> None:
        """Call ``hook`` on each plugin. One that raises never fails the run: its first failure is shown
        with its traceback (in the run's output and the log), and that hook of that plugin is not
        called again (``after_step`` would otherwise print the same error on every step); ``close``
        is always called."""
        for index, plugin in enumerate(self.plugins):
            if (index, hook) in self._failed:
                continue
            try:
                run(plugin)
            except Exception as e:  # a plugin never fails the run: say what went wrong and go on
                if hook != "close":
                    self._failed.add((index, hook))
                trace = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                log.warning("plugin %s failed in %s (not called there again):\n%s", plugin.name, hook, trace)
                print(
                    f"[dlnest-ray] plugin {plugin.name} failed in {hook}; {hook} of {plugin.name} is not "
                    f"called again in this run:\n{trace}",
                    end="",
                    flush=True,
                )

    # the hooks of :class:`Plugin`, on every plugin of the run
    def before_all(self) -> None:
        self._each("before_all", lambda p: p.before_all())

    def run_started(self, log: Mapping[str, Any], resumed: bool) -> None:
        self._each("run_started", lambda p: p.run_started(log, resumed))

    def after_step(self, epoch: int, iter: int, log: Mapping[str, Any]) -> None:
        self._each("after_step", lambda p: p.after_step(epoch, iter, log))

    def after_epoch(self, epoch: int, log: Mapping[str, Any]) -> None:
        self._each("after_epoch", lambda p: p.after_epoch(epoch, log))

    def train_finished(self, log: Mapping[str, Any]) -> None:
        self._each("train_finished", lambda p: p.train_finished(log))

    def train_aborting(self, exception: BaseException) -> None:
        self._each("train_aborting", lambda p: p.train_aborting(exception))

    def close(self) -> None:
        self._each("close", lambda p: p.close())
