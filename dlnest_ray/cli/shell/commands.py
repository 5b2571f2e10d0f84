"""What a typed line means (pure: :func:`plan`), and running a CLI command in-process with its output
captured (:class:`CliRunner`).

Most verbs are the CLI's own Typer commands, invoked in this process with the same arguments, so the
shell can never drift from ``dlnest-ray``. Four are the shell's own: ``watch``/``withdraw`` only switch
the analyzer pane, ``exp`` submits the script and lets the pane stream its lines (the CLI's ``exp``
would block in a loop printing them), and ``clear`` empties the messages pane. Verbs that would take
the process over or pull the cluster from under the shell (``train``, ``up``, ``down``, ``log -F``,
``analyze --script``) are refused with a line saying what to do instead.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO

from ...errors import DlnestError
from ...tasks import TaskKind

__all__ = [
    "CLI_VERBS",
    "SHELL_VERBS",
    "Action",
    "CliCall",
    "CliRunner",
    "Exp",
    "Outcome",
    "Refuse",
    "RoutedStream",
    "ShellVerb",
    "Watch",
    "plan",
]

CLI_VERBS = (
    "run",
    "continue",
    "sweep",
    "sweeps",
    "analyze",
    "del",
    "config",
    "new",
    "tasks",
    "devices",
    "log",
    "metrics",
    "compare",
)
SHELL_VERBS = ("exp", "watch", "withdraw", "clear", "help", "exit", "quit")
REFUSED = {
    "train": "`train` runs in the foreground and would take the shell over: use `run CONFIG` to queue it",
    "up": "the cluster is already up (the shell is connected to it)",
    "down": "`down` stops the cluster under the shell: exit the shell and run `dlnest-ray down`",
    "shell": "already in the shell",
}
HELP = """commands (as `dlnest-ray COMMAND`; `COMMAND --help` shows its options):
  run CONFIG [-m MB] [--ddp|--multi-gpu|--cpu] [-d DESC]   queue a training run
  continue PACKAGE [--ckpt ID]    queue the continuation of a package
  sweep CONFIG KEY=SPEC... [--trials N] [--stop RULE]   queue a sweep (S_...: del, compare); sweeps
  analyze PACKAGE [--cpu]         queue a warm analyzer (watched when none is)
  exp [A_ID] SCRIPT [-t S]        run a script on the watched (or given) analyzer
  watch ID / withdraw             show an analyzer's (or a run's) output in the right pane / stop
  del ID...   tasks [--all]   devices   config [--devices ...]   log [--clear]   new DIR
  metrics PACKAGE   compare PACKAGE... | S_ID   clear (this pane)   exit (tasks keep running)
keys: Tab completes, Up/Down history, PageUp/PageDown scroll the output pane, Ctrl-D or Ctrl-C leaves"""


@dataclass(kw_only=True, frozen=True)
class CliCall:
    """Run the CLI's Typer command ``args[0]`` with ``args[1:]`` in a worker thread."""

    args: list[str]


@dataclass(kw_only=True, frozen=True)
class Exp:
    """Run SCRIPT on ``task_id`` (None: the watched analyzer, else the one the CLI remembers)."""

    task_id: str | None
    script: str
    timeout_s: float | None = None


@dataclass(kw_only=True, frozen=True)
class Watch:
    task_id: str


@dataclass(kw_only=True, frozen=True)
class ShellVerb:
    """``withdraw``, ``clear``, ``help``, ``exit`` or ``noop`` (an empty line)."""

    name: str


@dataclass(kw_only=True, frozen=True)
class Refuse:
    """A line that is not run; ``message`` says why and what to type instead."""

    message: str


Action = CliCall | Exp | Watch | ShellVerb | Refuse


def _parse_exp(words: list[str]) -> Action:
    timeout: float | None = None
    rest: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("--timeout", "-t") or w.startswith("--timeout="):
            value = w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if "=" in w else 2
            try:
                timeout = float(value)
            except ValueError:
                return Refuse(message=f"--timeout needs a number of seconds, not {value!r}")
            continue
        if w == "--json":
            return Refuse(message="exp --json is for scripts: the shell shows the output in its pane")
        if w.startswith("-"):
            return Refuse(message=f"exp: unknown option {w} (usage: exp [A_ID] SCRIPT [--timeout S])")
        rest.append(w)
        i += 1
    if len(rest) == 2 and TaskKind.of(rest[0]) is TaskKind.ANALYZE:
        return Exp(task_id=rest[0], script=rest[1], timeout_s=timeout)
    if len(rest) == 1 and TaskKind.of(rest[0]) is not TaskKind.ANALYZE:
        return Exp(task_id=None, script=rest[0], timeout_s=timeout)
    return Refuse(message="usage: exp [A_ID] SCRIPT [--timeout S]")


def plan(line: str) -> Action:
    """What to do with a typed line (shell quoting: ``run "my proj/root_config.json"``)."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        return Refuse(message=f"cannot parse the line: {e}")
    if not words:
        return ShellVerb(name="noop")
    verb, rest = words[0], words[1:]
    if verb in ("exit", "quit"):
        return ShellVerb(name="exit")
    if verb in ("help", "?", "--help", "-h"):
        return ShellVerb(name="help")
    if verb in ("withdraw", "clear"):
        return ShellVerb(name=verb) if not rest else Refuse(message=f"{verb} takes no arguments")
    if verb == "watch":
        if len(rest) != 1 or rest[0][:2] not in ("A_", "T_"):
            return Refuse(message="usage: watch A_ID (an analyzer) or watch T_ID (a run's output)")
        return Watch(task_id=rest[0])
    if verb == "exp":
        return _parse_exp(rest)
    if verb in REFUSED:
        return Refuse(message=REFUSED[verb])
    if verb == "log" and ("-F" in rest or "--follow" in rest):
        return Refuse(message="the center's log is followed in the left pane already")
    if verb == "analyze" and any(w in ("--script", "-s") or w.startswith("--script=") for w in rest):
        return Refuse(message="analyze --script loads torch in this process: run it in a terminal")
    if verb in CLI_VERBS:
        return CliCall(args=words)
    return Refuse(message=f"unknown command {verb!r} (`help` lists them)")


# ---------------------------------------------------------------------------------------------- capture
class RoutedStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while the shell runs: a thread that called :meth:`capture` writes
    into its own buffer (one command's messages), any other thread into ``fallback`` (the shell log).

    A capturing thread is told it writes to a terminal, so typer keeps its colours and rich draws
    tables (at ``$COLUMNS``); the pane turns the ANSI codes back into styles."""

    def __init__(self, fallback: TextIO) -> None:
        super().__init__()
        self.fallback = fallback
        self._local = threading.local()

    def capture(self, buffer: io.StringIO | None) -> None:
        self._local.buffer = buffer

    def _target(self) -> io.StringIO | None:
        buffer: io.StringIO | None = getattr(self._local, "buffer", None)
        return buffer

    def write(self, s: str) -> int:
        target = self._target()
        if target is not None:
            return target.write(s)
        return self.fallback.write(s)

    def flush(self) -> None:
        if self._target() is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return self._target() is not None

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


@dataclass(kw_only=True)
class Outcome:
    """A command's captured output (with ANSI codes), and its error line when it failed."""

    output: str = ""
    error: str = ""
    exit_code: int = 0


@dataclass(kw_only=True)
class CliRunner:
    """Invokes the Typer app in this process (``standalone_mode=False``), one call per worker thread.

    ``command`` is ``typer.main.get_command(app)``; ``stdout``/``stderr`` are the :class:`RoutedStream`
    installed as ``sys.stdout``/``sys.stderr``."""

    command: Any
    stdout: RoutedStream
    stderr: RoutedStream
    columns: int = 100
    _env_lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, args: list[str]) -> Outcome:
        """Run ``dlnest-ray ARGS``: a DlnestError gives its one line, a usage error click's message,
        anything else ``internal error`` (the traceback goes to the shell log)."""
        import typer

        try:
            from typer._click import exceptions as click_exceptions  # typer >= 0.29 ships click
        except ImportError:  # pragma: no cover - depends on the installed typer
            from click import exceptions as click_exceptions  # type: ignore[no-redef]

        buffer = io.StringIO()
        self.stdout.capture(buffer)
        self.stderr.capture(buffer)
        with self._env_lock:  # rich sizes its tables from $COLUMNS: the messages pane's width
            os.environ["COLUMNS"] = str(max(40, self.columns))
        out = Outcome()
        try:
            result = self.command.main(args=args, prog_name="dlnest-ray", standalone_mode=False)
            out.exit_code = result if isinstance(result, int) else 0
        except DlnestError as e:
            out.error, out.exit_code = f"error: {e}", 1
        except click_exceptions.ClickException as e:
            e.show()  # usage and message, into the buffer
            out.exit_code = e.exit_code
        except typer.Exit as e:
            out.exit_code = e.exit_code
        except (typer.Abort, KeyboardInterrupt):
            out.error, out.exit_code = "error: interrupted", 130
        except SystemExit as e:
            out.exit_code = e.code if isinstance(e.code, int) else 1
        except Exception as e:
            out.error, out.exit_code = f"internal error: {type(e).__name__}: {e}", 1
            traceback.print_exc(file=self.stderr.fallback)
        finally:
            self.stdout.capture(None)
            self.stderr.capture(None)
        out.output = buffer.getvalue()
        return out


def install_streams(fallback: TextIO) -> tuple[RoutedStream, RoutedStream]:
    """Replace ``sys.stdout`` and ``sys.stderr`` by routed streams writing to ``fallback`` by default."""
    out, err = RoutedStream(fallback), RoutedStream(fallback)
    sys.stdout, sys.stderr = out, err
    return out, err
