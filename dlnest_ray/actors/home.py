"""Where dlnest-ray keeps its state on this machine: ``$DLNEST_RAY_HOME``, else ``~/.dlnest_ray``.

A leaf module, so a CLI command can find the center's socket without loading the center's state code.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "default_home"]

HOME_ENV = "DLNEST_RAY_HOME"


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".dlnest_ray").expanduser().resolve()
