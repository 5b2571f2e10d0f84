"""The ``dlnest-ray`` application: command registration and the one error boundary.

Importing this module must not import torch, ray, pyarrow or pynvml: commands import what they need
inside their bodies, so ``dlnest-ray --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.29 ships its own copy of click; older versions use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from ..errors import DlnestError
from . import analysis, cluster, compare, foreground, metrics, project, queue, shell, sweep

app = typer.Typer(
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


@app.callback()
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


app.command("new")(project.new)
app.command("train")(foreground.train)
app.command("analyze")(analysis.analyze)
app.command("exp")(analysis.exp)
app.command("up")(cluster.up)
app.command("down")(cluster.down)
app.command("run")(queue.run)
app.command("continue")(queue.continue_)
app.command("sweep")(sweep.sweep)
app.command("tasks")(queue.tasks)
app.command("devices")(queue.devices)
app.command("del")(queue.delete)
app.command("config")(queue.config)
app.command("log")(queue.log)
app.command("watch")(queue.watch)
app.command("metrics")(metrics.metrics)
app.command("compare")(compare.compare)
app.command("shell")(shell.shell)


def error_line(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. A :class:`DlnestError` prints one red line and exits 1; Ctrl-C exits 130."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="dlnest-ray", standalone_mode=False)
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
