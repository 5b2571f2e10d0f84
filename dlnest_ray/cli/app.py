"""The ``dlnest-ray`` application: command registration and the one error boundary.

Importing this module must not import torch, ray, pyarrow or pynvml: commands import what they need
inside their bodies, so ``dlnest-ray --help`` is instant. A process registers only the command it runs
(:func:`command_named`), so it imports only that command's module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import import_module

import typer

try:  # typer >= 0.29 ships its own copy of click; older versions use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from ..errors import DlnestError
from . import coercion


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"dlnest-ray {version('dlnest-ray')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
            typer.echo("dlnest-ray (not installed)")
        raise typer.Exit()


def _token_file(value: str | None) -> None:
    """``--token-file F``: this process's auth token (as ``RAY_AUTH_TOKEN_PATH``), checked now."""
    if value:
        import os
        from pathlib import Path

        from ..actors.auth import PATH_ENV, readable_token_file

        os.environ[PATH_ENV] = str(readable_token_file(Path(value).expanduser().resolve()))


def _root(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True
    ),
    token_file: str | None = typer.Option(
        None,
        "--token-file",
        metavar="FILE",
        help="The cluster's auth token (default: $RAY_AUTH_TOKEN_PATH, else the home's, else ~/.ray's).",
        callback=_token_file,
    ),
) -> None:
    """Queue, place, record, resume and analyze PyTorch training runs (the successor of DLNest)."""


# name → (module of dlnest_ray.cli, function), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("project", "new"),
    "train": ("foreground", "train"),
    "analyze": ("analysis", "analyze"),
    "exp": ("analysis", "exp"),
    "up": ("cluster", "up"),
    "down": ("cluster", "down"),
    "run": ("queue", "run"),
    "continue": ("queue", "continue_"),
    "sweep": ("sweep", "sweep"),
    "sweeps": ("sweep", "sweeps"),
    "tasks": ("queue", "tasks"),
    "devices": ("queue", "devices"),
    "del": ("queue", "delete"),
    "config": ("queue", "config"),
    "log": ("queue", "log"),
    "watch": ("queue", "watch"),
    "metrics": ("metrics", "metrics"),
    "compare": ("compare", "compare"),
    "shell": ("shell", "shell"),
}
# commands that need the whole app: the shell runs every other command through its root group
_WHOLE_APP = {"shell"}
_ROOT_VALUE_OPTIONS = {"--token-file"}


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI's Typer app: every command, or only the command ``only`` (the root options included).

    Typer imports each registered command's module and inspects its signature; registering only the
    command a process runs saves that for the others (issue 16: ``tasks`` should answer like ``squeue``).
    """
    application = typer.Typer(
        name="dlnest-ray",
        help=(
            "Queue, place, record, resume and analyze PyTorch training runs (the successor of DLNest).\n\n"
            "Start with `dlnest-ray new DIR --mnist`, then `dlnest-ray train DIR/root_config.json`."
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    application.callback()(_root)
    for name, (module, function) in COMMANDS.items():
        if only is None or name == only:
            application.command(name)(getattr(import_module(f"{__package__}.{module}"), function))
    return application


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs when only that command's registration is needed, else None.

    None (the whole app) for no command, an unknown one (click suggests the right one), a root option
    other than ``--token-file`` before it (``--help``/``--version`` describe the whole app), and the shell.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _ROOT_VALUE_OPTIONS:
            i += 2
        elif any(arg.startswith(f"{option}=") for option in _ROOT_VALUE_OPTIONS):
            i += 1
        elif arg.startswith("-"):
            return None
        else:
            return arg if arg in COMMANDS and arg not in _WHOLE_APP else None
    return None


_whole: typer.Typer | None = None


def whole_app() -> typer.Typer:
    """The app with every command, built once per process."""
    global _whole
    if _whole is None:
        _whole = build_app()
    return _whole


def __getattr__(name: str) -> typer.Typer:
    """``app``: the whole app, built on first use (tests and the shell's completion read it)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return whole_app()


def error_line(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. A :class:`DlnestError` prints one red line and exits 1; Ctrl-C exits 130."""
    coercion.install()  # no pydantic on a command's path (~150 ms of a `tasks`)
    args = sys.argv[1:] if argv is None else list(argv)
    only = command_named(args)
    command = typer.main.get_command(build_app(only) if only else whole_app())
    try:
        result = command.main(args=args, prog_name="dlnest-ray", standalone_mode=False)
    except DlnestError as e:
        error_line(str(e))
        sys.exit(1)
    except click_exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
