"""A queued run's environment: the submitting shell's variables travel with the run, as with Slurm.

At submit (``run``, ``continue``, ``analyze``; the CLI and the Python client alike) the submitting
process's environment is captured, less the variables in :data:`DENY` — they describe the submitting
process or terminal, or would break where and how the run is placed — and plus ``--env NAME=VALUE``.
The center keeps it beside the task in its state folder (a file of mode 0600 per task, removed when
the task ends), never in ``center.json``, ``tasks`` or the dashboard; every rank and analyzer applies it
before user code is imported, and dlnest-ray's own variables (``CUDA_VISIBLE_DEVICES``, the DDP
rendezvous...) are set over it. The run's segment in ``_package.json`` records the names, not the values.

Pure: no Ray, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import DlnestError

__all__ = [
    "DENY",
    "DENY_PREFIXES",
    "ENV_NAMES_VAR",
    "captured_env",
    "checked_env",
    "is_denied",
    "parse_env_options",
]

ENV_NAMES_VAR = "DLNEST_RAY_ENV_NAMES"  # set in each rank: the names of the variables it was given

# Exact names never taken from the submitting shell.
DENY = frozenset(
    {
        # where the run goes and what it sees: dlnest-ray decides these per rank
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        # the submitting process and its terminal
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "TERM",
        "COLORTERM",
        "COLUMNS",
        "LINES",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "XAUTHORITY",
        "TMUX",
        "TMUX_PANE",
        "STY",
        "WINDOW",
        "PS1",
        "PS2",
        "PROMPT_COMMAND",
        "LS_COLORS",
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
        "XDG_VTNR",
        "XDG_SEAT",
        "SSH_AUTH_SOCK",
        "SSH_AGENT_PID",
        "SSH_CLIENT",
        "SSH_CONNECTION",
        "SSH_TTY",
        "GPG_AGENT_INFO",
        "HOSTNAME",
    }
)
# Prefixes never taken: Ray's own settings (the cluster's, not the submitter's), dlnest-ray's own
# (they configure dlnest-ray, not the run), terminal emulators' and the shell's session variables.
DENY_PREFIXES = ("RAY_", "DLNEST_RAY_", "TERM_", "KONSOLE_", "ITERM_", "VTE_", "BASH_FUNC_", "XDG_SESSION_")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_denied(name: str) -> bool:
    return name in DENY or name.startswith(DENY_PREFIXES)


def parse_env_options(values: Iterable[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` options (repeatable) as a dict; a malformed one is a :class:`DlnestError`."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name):
            raise DlnestError(f"--env takes NAME=VALUE with NAME a variable name; got {item!r}")
        out[name] = value
    return out


def captured_env(
    environ: Mapping[str, str], *, capture: bool = True, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What the run gets: ``environ`` less the deny-list (nothing when ``capture`` is off), then
    ``extra`` (``--env``: given explicitly, so taken even when its name is on the deny-list — except
    the names dlnest-ray sets itself per rank, which would be overwritten anyway)."""
    env = {k: v for k, v in environ.items() if not is_denied(k)} if capture else {}
    for name, value in (extra or {}).items():
        if _set_by_dlnest(name):
            raise DlnestError(f"--env {name}=...: dlnest-ray sets {name} itself for every rank")
        env[name] = value
    return env


# Names dlnest-ray sets in every rank over the run's environment (actors/supervisor.py): a value given
# for one would be overwritten, so it is refused rather than silently dropped.
_SET_PER_RANK = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    }
)


def _set_by_dlnest(name: str) -> bool:
    """Whether dlnest-ray sets ``name`` itself for every rank (so the run's environment may not)."""
    return name in _SET_PER_RANK or name.startswith(("RAY_", "DLNEST_RAY_"))


def checked_env(env: object) -> dict[str, str]:
    """A submitted environment as the center accepts it: names to string values, no name dlnest-ray
    sets per rank (a :class:`DlnestError` says which is wrong)."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise DlnestError("the run's environment must map variable names to values")
    bad = [k for k, v in env.items() if not (isinstance(k, str) and _NAME.match(k) and isinstance(v, str))]
    if bad:
        raise DlnestError(f"the run's environment has bad entries: {', '.join(map(repr, bad[:5]))}")
    clash = sorted(k for k in env if _set_by_dlnest(k))
    if clash:
        raise DlnestError(f"the run's environment sets {', '.join(clash)}, which dlnest-ray sets itself")
    return dict(env)
