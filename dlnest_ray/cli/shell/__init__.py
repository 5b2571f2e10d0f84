"""``dlnest-ray shell``: DLNest's full-screen client, done right.

One terminal screen with the center's log, the watched analyzer's (or run's) output, the task table,
the GPUs, a messages pane and a command line with history and completion. The commands are the CLI's
own (``run``, ``continue``, ``analyze``, ``del``, ``config``, ...) plus ``watch ID``/``withdraw`` for the
output pane and ``exp [A_ID] SCRIPT`` streaming into it.

Why prompt_toolkit (and not Textual): it is pure Python with two small dependencies (wcwidth), its
core is exactly what a shell needs (line editing, history, completion menus), it draws with plain
VT100 sequences that work the same in tmux, screen and over ssh, and DLNest's client already used it,
so its users find the same keys. Textual would bring a CSS engine, rich widgets and an async framework
for five text panes.

Design (see the modules):

* :mod:`.panes`: pure formatting of each pane from plain data (testable without a terminal);
* :mod:`.state`: the panes' data and the ONE polling thread that refreshes them incrementally
  (line offsets for logs and analyzer output, byte offsets for a run's output file);
* :mod:`.commands`: what a typed line means, and running the CLI's Typer commands in-process with
  their output captured (in worker threads, so a slow command never freezes the screen);
* :mod:`.completion`: verbs, flags (read from the Typer commands), task ids, paths, script names;
* :mod:`.app`: the layout (side by side from 120 columns, stacked below), keys, and the terminal.

Importing this package imports neither prompt_toolkit nor Ray nor torch: :func:`shell` loads them
when it runs, so ``dlnest-ray --help`` stays instant.
"""

from __future__ import annotations

from typing import Any

import typer

from ..options import AddressOpt

__all__ = ["run_shell", "shell"]


def run_shell(cli_command: Any, address: str | None = None) -> None:
    """Run the shell on the cluster at ``address`` (default: as every command finds it) until
    ``exit``, Ctrl-D or Ctrl-C, with ``cli_command`` (the ``dlnest-ray`` click group) for its commands.
    Leaving never touches a task."""
    from .app import run_shell as run

    run(cli_command, address)


def shell(ctx: typer.Context, address: AddressOpt = None) -> None:
    """A full-screen client: live task table, GPUs, the center's log and an analyzer's output, and a
    command line with history and completion (the same commands, plus `watch ID` and `withdraw`).

    `exit`, Ctrl-D or Ctrl-C leaves; running and pending tasks are never touched.
    """
    run_shell(ctx.find_root().command, address)  # the commands of the app this one belongs to
