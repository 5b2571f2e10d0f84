"""``SimpleCMDVisualize``: print chosen log values every ``stride`` steps (DLNest 0.3's plugin).

Settings: ``stride`` (steps, default 1), ``keys`` (log keys to show), ``format`` (per key, a
``str.format`` pattern given the key and its latest value; default ``"\\t| {}: {}"``). Rank 0 prints
``Iter : 10\\t| loss : 0.123456`` into the output; a key the log lacks, or a value the format does not
fit, shows as ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import Plugin

__all__ = ["DLNestPlugin"]

DEFAULT_FORMAT = "\t| {}: {}"


class DLNestPlugin(Plugin):
    name: ClassVar[str] = "SimpleCMDVisualize"
    defaults: ClassVar[dict[str, Any]] = {"stride": 1, "keys": [], "format": {}}

    def after_step(self, epoch: int, iter: int, log: Mapping[str, Any]) -> None:
        stride = max(1, int(self.settings["stride"]))
        if not self.context.is_main or iter % stride:
            return
        formats = {k: DEFAULT_FORMAT for k in self.settings["keys"]} | dict(self.settings["format"])
        parts = [f"Iter : {iter}"]
        for key in self.settings["keys"]:
            value = log.get(key)
            if isinstance(value, (list, tuple)):
                value = value[-1] if value else None
            if value is not None and hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
                value = value.item()
            try:
                parts.append(formats[key].format(key, value))
            except (ValueError, TypeError, IndexError, KeyError):  # no value yet, or one the spec refuses
                bare = re.sub(r"\{[^{}]*\}", "{}", formats[key])  # the same text, without format specs
                try:
                    parts.append(bare.format(key, "-"))
                except (ValueError, IndexError):
                    parts.append(DEFAULT_FORMAT.format(key, "-"))
        print("".join(parts), flush=True)
