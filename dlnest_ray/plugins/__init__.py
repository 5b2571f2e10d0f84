"""DLNest 0.3's plugins, as dlnest-ray runs them: ``LogInit``, ``AutoTensorboardScalar``,
``SimpleCMDVisualize`` and ``MailsNote``.

A project lists them the way DLNest 0.3.2's template did, usually in ``plugins_config.json``::

    {"plugins": ["LogInit", "SimpleCMDVisualize", "MailsNote"],
     "plugins_config": {"SimpleCMDVisualize": {"stride": 10, "keys": ["loss"]}, ...}}

and DLNest code imports them as before, with its import changed: ``from dlnest_ray.plugins.MailsNote
import DLNestPlugin as MailsNotePlugin``. Each runs in every rank of a training run, with its settings
from ``plugins_config.<name>``; what each does is in its module. A name that is not one of these is
refused when the run is submitted (DLNest's plugins from files of one's own are not supported: write
life-cycle hooks instead). This module is light (no torch): the config check runs at submit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["KNOWN", "check_plugins"]

KNOWN = ("LogInit", "AutoTensorboardScalar", "SimpleCMDVisualize", "MailsNote")


def check_plugins(args: Mapping[str, Any], source: str) -> list[str]:
    """The plugin names the config lists, checked: ``plugins`` is a list of known names without
    repeats, ``plugins_config`` a dict of dicts. Raises a :class:`ConfigError` naming what is wrong."""
    names = args.get("plugins", [])
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{source}: 'plugins' must be a list of plugin names ({', '.join(KNOWN)})")
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ConfigError(
            f"{source}: unknown plugin {', '.join(map(repr, unknown))}; dlnest-ray provides "
            f"{', '.join(KNOWN)} (for anything else, use life-cycle hooks)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: plugin {', '.join(map(repr, repeated))} is listed twice")
    settings = args.get("plugins_config", {})
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping) or not all(isinstance(v, Mapping) for v in settings.values()):
        raise ConfigError(f"{source}: 'plugins_config' must map plugin names to dicts of settings")
    return list(names)
