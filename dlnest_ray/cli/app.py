"""The ``dlnest-ray`` application: command registration and the one error boundary.

Importing this module must not import torch, ray, pyarrow or pynvml: commands import what they need
inside their bodies, so ``dlnest-ray --help`` is instant.
"""

from __future__ import annotations

import sys

import click
import typer

from ..errors import DlnestError
from . import foreground, project

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
app.command("new")(project.new)
app.command("train")(foreground.train)
app.command("analyze")(foreground.analyze)


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
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        error_line("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
