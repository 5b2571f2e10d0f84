"""``LogInit``: set up Python's ``logging`` in every rank before the run starts (DLNest 0.3's plugin).

Settings (``plugins_config.LogInit``): ``level`` (a level name, default ``INFO``), ``format`` and
``datefmt`` (``logging.basicConfig``'s). Records go to stderr, so into the rank's output file.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from .base import Plugin

__all__ = ["DLNestPlugin"]


class DLNestPlugin(Plugin):
    name: ClassVar[str] = "LogInit"
    defaults: ClassVar[dict[str, Any]] = {
        "level": "INFO",
        "format": "[%(asctime)s][%(levelname)s] %(message)s",
        "datefmt": "%Y-%m-%d %H:%M:%S",
    }

    def before_all(self) -> None:
        level = self.settings["level"]
        if isinstance(level, str):
            level = level.upper()
        logging.basicConfig(
            level=level, format=self.settings["format"], datefmt=self.settings["datefmt"], force=True
        )
