"""The full-screen application: layout, key bindings, running typed commands, and the terminal's
file descriptors while the shell owns the screen.

Only prompt_toolkit draws: every pane is a ``FormattedTextControl`` in a ``Window`` with
``wrap_lines=True`` and prompt_toolkit's renderer diffs screens, so shrinking or wrapping output
never leaves stale characters (DLNest's client patched private resize hooks and replaced documents
under a lexer; see the reference, section 11). Anything else that writes to fd 1/2 in this process
(Ray's core, warnings, a stray print) goes to ``$DLNEST_RAY_HOME/shell.log`` instead of the screen.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, cast

from prompt_toolkit.application import Application, get_app
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import (
    AnyContainer,
    BufferControl,
    DynamicContainer,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    UIContent,
    VSplit,
    Window,
)
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.styles import Style
from prompt_toolkit.widgets import Frame

from ...actors.jobs import JobState
from ...errors import DlnestError
from ...tasks import TaskKind
from .commands import HELP, CliCall, CliRunner, Exp, Refuse, ShellVerb, Watch, install_streams, plan
from .completion import CompletionContext, ShellCompleter, specs_from_click
from .panes import (
    Fragments,
    choose_layout,
    devices_fragments,
    log_fragments,
    tasks_fragments,
    top_fragments,
)
from .state import Poller, ShellState

__all__ = ["Shell", "run_shell"]

PROMPT = "dlnest> "
HINT = "`help` lists the commands (those of dlnest-ray, plus watch and withdraw); Tab completes"
STYLE = Style.from_dict(
    {
        "dim": "fg:ansibrightblack",
        "frame.label": "bold",
        "status": "reverse",
        "prompt": "bold fg:ansicyan",
        "echo": "bold",
    }
)
SCRIPTS_TTL_S = 10.0


def _is_analyzer(task_id: str | None) -> bool:
    return task_id is not None and TaskKind.of(task_id) is TaskKind.ANALYZE


class SizedControl(FormattedTextControl):
    """A FormattedTextControl that remembers the width it was last drawn at, so its text function can
    fit a table to the pane (the first frame after a resize uses the previous width; the poller's
    next redraw, at most half a second later, corrects it)."""

    def __init__(self, text: Callable[[SizedControl], Fragments]) -> None:
        self.width = 80

        def fragments() -> StyleAndTextTuples:
            # plain (style, text) pairs are a subset of prompt_toolkit's fragment type (list is invariant)
            return cast("StyleAndTextTuples", text(self))

        super().__init__(fragments, focusable=False, show_cursor=False)

    def create_content(self, width: int, height: int | None) -> UIContent:
        self.width = width
        return super().create_content(width, height)


class Shell:
    """One shell session on a connected client: the state, the poller, the application."""

    def __init__(self, client: Any, *, history_path: Path, cli_command: Any, output: Any = None) -> None:
        self.client = client
        self.state = ShellState()
        self.runner: CliRunner | None = None
        self.cli_command = cli_command
        self.specs = specs_from_click(cli_command)
        self._scripts: dict[str, tuple[float, list[str]]] = {}
        self.buffer = Buffer(
            multiline=False,
            history=FileHistory(str(history_path)),
            completer=ThreadedCompleter(ShellCompleter(self._completion_context)),
            complete_while_typing=False,
            auto_suggest=AutoSuggestFromHistory(),
            accept_handler=self._accept,
        )
        self.center = SizedControl(lambda c: log_fragments(self._snap.center, empty="no messages yet"))
        self.output_back = 0  # lines the output pane is scrolled back from its end (PageUp/PageDown)
        self.help_top: int | None = None  # the output pane shows the help from this line (None: not)
        self.output = SizedControl(self._output_fragments)
        self.messages = SizedControl(lambda c: log_fragments(self._snap.messages, empty=HINT))
        self.tasks = SizedControl(
            lambda c: tasks_fragments(self._snap.tasks, c.width, error=self._snap.error)
        )
        self.devices = SizedControl(
            lambda c: devices_fragments(self._snap.devices, c.width, tasks=self._snap.tasks)
        )
        self._snap = self.state.snapshot()
        self.windows = self._make_windows()
        self.app: Application[None] = Application(
            output=output,
            layout=Layout(self._root(), focused_element=self.buffer),
            key_bindings=self._keys(),
            style=STYLE,
            full_screen=True,
            before_render=lambda _app: self._refresh_snapshot(),
        )
        self.poller = Poller(client=client, state=self.state, redraw=self.app.invalidate)

    # ------------------------------------------------------------------------------------------ layout
    def _refresh_snapshot(self) -> None:
        watched = self._snap.watched
        self._snap = self.state.snapshot()  # one consistent copy per frame, taken in the UI thread
        if self._snap.watched != watched:  # another pane content: start at its end
            self.output_back = 0

    def _output_fragments(self, control: SizedControl) -> Fragments:
        if self.help_top is not None:
            return top_fragments(HELP.splitlines(), first=self.help_top)
        return log_fragments(self._snap.output, empty=self._output_hint(), back=self.output_back)

    def _output_hint(self) -> str:
        if self._snap.watched is None:
            return "no analyzer watched: `watch A_ID` (or `watch T_ID` for a run's output)"
        return f"no output from {self._snap.watched} yet"

    def _output_title(self) -> str:
        if self.help_top is not None:
            return "help (PgUp/PgDn scroll · Esc or `withdraw` closes)"
        watched = self._snap.watched
        if watched is None:
            return "analyzer"
        kind = "analyzer" if _is_analyzer(watched) else "output of"
        return f"{kind} {watched}" + ("" if self._snap.watched_alive else " (ended)")

    def _make_windows(self) -> dict[str, Window]:
        def pane(control: SizedControl, **kw: Any) -> Window:
            return Window(control, wrap_lines=True, **kw)

        return {
            "center": pane(self.center, width=Dimension(weight=1)),
            "output": pane(self.output, width=Dimension(weight=1)),
            "tasks": Window(self.tasks, wrap_lines=False),
            "devices": Window(self.devices, wrap_lines=False),
            "messages": pane(self.messages),
            "command": Window(
                BufferControl(self.buffer, input_processors=[BeforeInput(PROMPT, style="class:prompt")]),
                height=1,
            ),
            "status": Window(FormattedTextControl(self._status), height=1, style="class:status"),
        }

    def _task_rows(self) -> Dimension:
        from .panes import visible_tasks

        rows = len(visible_tasks(self._snap.tasks)) + 1 + (1 if self._snap.error else 0)
        return Dimension(min=3, preferred=max(3, rows) + 2, max=max(3, rows) + 2)

    def _device_rows(self) -> Dimension:
        rows = len(self._snap.devices) + 1
        return Dimension(min=3, preferred=rows + 2, max=rows + 2)

    def _root(self) -> AnyContainer:
        w = self.windows

        def framed(name: str, title: str | Callable[[], str], **kw: Any) -> Frame:
            return Frame(w[name], title=title, **kw)

        wide = HSplit(
            [
                VSplit([framed("center", "center log"), framed("output", self._output_title)]),
                VSplit(
                    [
                        framed("tasks", "tasks"),
                        framed("devices", "devices", width=Dimension(min=32, preferred=52, max=52)),
                    ],
                    height=lambda: max(self._task_rows(), self._device_rows(), key=lambda d: d.preferred),
                ),
                framed("messages", "messages", height=Dimension(min=4, preferred=9, max=9)),
                w["command"],
                w["status"],
            ]
        )
        narrow = HSplit(
            [
                framed("center", "center log"),
                framed("output", self._output_title),
                framed("tasks", "tasks", height=self._task_rows),
                framed("devices", "devices", height=self._device_rows),
                framed("messages", "messages", height=Dimension(min=3, preferred=7, max=7)),
                w["command"],
                w["status"],
            ]
        )

        def current() -> AnyContainer:
            return wide if choose_layout(get_app().output.get_size().columns) == "wide" else narrow

        return FloatContainer(
            content=DynamicContainer(current),
            floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=12))],
        )

    def _status(self) -> StyleAndTextTuples:
        parts = [f" watching {self._snap.watched}" if self._snap.watched else " no analyzer watched"]
        if self._snap.busy:
            parts.append(f"{self._snap.busy} command(s) running")
        if self._snap.error:
            parts.append("center: " + self._snap.error[:60])
        if self.output_back and self.help_top is None:
            parts.append(f"output scrolled back {self.output_back} lines (PageDown)")
        parts.append("Tab completes · ↑↓ history · PgUp/PgDn scroll · Ctrl-D leaves (tasks keep running)")
        return [("class:status", " | ".join(parts))]

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()
        empty = Condition(lambda: not self.buffer.text)

        @keys.add("c-c")
        @keys.add("c-d", filter=empty)
        def _leave(event: KeyPressEvent) -> None:
            event.app.exit()

        def page() -> int:
            info = self.windows["output"].render_info
            return max(1, (info.window_height if info is not None else 10) - 1)

        @keys.add("pageup")
        def _back(event: KeyPressEvent) -> None:  # scroll the output pane back (it stops following)
            if self.help_top is not None:
                self.help_top = max(0, self.help_top - page())
                return
            self.output_back = min(self.output_back + page(), max(0, len(self._snap.output) - 1))

        @keys.add("pagedown")
        def _forward(event: KeyPressEvent) -> None:  # at the end again, it follows new lines
            if self.help_top is not None:
                self.help_top = min(self.help_top + page(), max(0, len(HELP.splitlines()) - 1))
                return
            self.output_back = max(0, self.output_back - page())

        @keys.add("escape", filter=Condition(lambda: self.help_top is not None))
        def _close_help(event: KeyPressEvent) -> None:
            self.help_top = None

        return keys

    # ------------------------------------------------------------------------------------------ completion
    def _completion_context(self) -> CompletionContext:
        return CompletionContext(
            specs=self.specs,
            task_ids=self.state.task_ids(),
            watched=self.state.watched if _is_analyzer(self.state.watched) else None,
            scripts_for=self._scripts_for,
        )

    def _scripts_for(self, task_id: str) -> list[str]:
        """The analyzer's script names, cached a few seconds (a cluster call per Tab would lag)."""
        import time

        cached = self._scripts.get(task_id)
        if cached and time.monotonic() - cached[0] < SCRIPTS_TTL_S:
            return cached[1]
        try:
            names = list(self.client.analyze_scripts(task_id))
        except Exception:  # not started yet, ended, or the center is busy: no names, no error
            names = []
        self._scripts[task_id] = (time.monotonic(), names)
        return names

    # ------------------------------------------------------------------------------------------ commands
    def _accept(self, buffer: Buffer) -> bool:
        line = buffer.text
        if line.strip():
            self.state.say(PROMPT + line, "class:echo")
        self.execute(line)
        return False  # clear the line (it is in the history)

    def execute(self, line: str) -> None:
        """Do what ``line`` means; anything that talks to the cluster runs in a worker thread."""
        action = plan(line)
        if isinstance(action, Refuse):
            self.state.say(f"error: {action.message}", "fg:ansired")
        elif isinstance(action, ShellVerb):
            if action.name == "exit":
                self.app.exit()
            elif action.name == "withdraw":
                if self.help_top is not None:  # first it closes the help, then it stops watching
                    self.help_top = None
                else:
                    self.state.watch(None)
            elif action.name == "clear":
                with self.state.lock:
                    self.state.messages.clear()
            elif action.name == "help":  # too long for the messages pane: the output pane shows it
                self.help_top = 0
                self.state.say("help is in the output pane (Esc or `withdraw` closes it)", "class:dim")
        elif isinstance(action, Watch):
            self._watch(action.task_id)
        elif isinstance(action, CliCall):
            self._in_worker(lambda: self._run_cli(action.args))
        elif isinstance(action, Exp):
            self._in_worker(lambda: self._run_exp(action))

    def _watch(self, task_id: str) -> None:
        """Show a task's output in the output pane; an id the center does not know is refused."""
        self.help_top = None
        known = self.state.task_ids()
        if task_id not in known:  # the poller may not list it yet (just submitted): ask the center
            self._in_worker(lambda: self._watch_if_known(task_id))
            return
        self._start_watching(task_id)

    def _watch_if_known(self, task_id: str) -> None:
        ids = {t.task_id for t in self.client.get_task_info(include_finished=True)}
        if task_id not in ids:
            raise DlnestError(f"no task {task_id!r}; `tasks --all` lists them")
        self._start_watching(task_id)

    def _start_watching(self, task_id: str) -> None:
        self.state.watch(task_id)
        if _is_analyzer(task_id):  # the CLI's `exp SCRIPT` then uses it too, as after `dlnest-ray watch`
            from ..analysis import remember_analyzer

            with contextlib.suppress(OSError):
                remember_analyzer(task_id)

    def _in_worker(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except DlnestError as e:
                self.state.say(f"error: {e}", "fg:ansired")
            except Exception as e:  # a bug or a Ray error: one line here, the traceback in the log
                import traceback

                self.state.say(f"internal error: {type(e).__name__}: {e}", "fg:ansired")
                traceback.print_exc()
            finally:
                with self.state.lock:
                    self.state.busy -= 1
                self.app.invalidate()

        with self.state.lock:
            self.state.busy += 1
        threading.Thread(target=run, name="dlnest-shell-command", daemon=True).start()

    def _run_cli(self, args: list[str]) -> None:
        assert self.runner is not None
        self.runner.columns = self.messages.width
        outcome = self.runner.run(args)
        if outcome.output:
            self.state.say_ansi(outcome.output)
        if outcome.error:
            self.state.say(outcome.error, "fg:ansired")
        if args[0] == "analyze" and outcome.exit_code == 0 and self.state.watched is None:
            from ..analysis import remembered_analyzer

            started = remembered_analyzer()
            if started:
                self.state.watch(started)
                self.state.say(f"watching {started} (its output is in the right pane)", "class:dim")

    def _run_exp(self, action: Exp) -> None:
        from ..analysis import _script_arg, remembered_analyzer

        watched = self.state.watched
        task_id = action.task_id or (watched if _is_analyzer(watched) else None)
        task_id = task_id or remembered_analyzer()
        if task_id is None:
            raise DlnestError("which analyzer? `watch A_ID` first, or `exp A_ID SCRIPT`")
        if self.state.watched != task_id:
            self._watch(task_id)

        def waiting(reason: str) -> None:
            self.state.say(f"waiting for {task_id}: {reason}", "class:dim")
            self.app.invalidate()

        job = self.client.submit_exp(task_id, _script_arg(action.script), action.timeout_s, on_wait=waiting)
        offset = 0
        while not JobState(job["state"]).is_terminal():  # the lines reach the pane through the poller
            out = self.client.poll_exp(task_id, int(job["job"]), offset, wait_s=1.0)
            offset, job = int(out["end"]), out["job"]
        if JobState(job["state"]) is JobState.SUCCEEDED:
            result = f": result {job['result']}" if job.get("result") is not None else ""
            self.state.say(f"{action.script} on {task_id} succeeded{result}", "fg:ansigreen")
        else:
            self.state.say(
                f"error: {action.script} on {task_id} {job['state'].lower()}: {job['error']}", "fg:ansired"
            )

    # ------------------------------------------------------------------------------------------ run
    def run(self, streams: tuple[Any, Any]) -> None:
        out, err = streams
        self.runner = CliRunner(command=self.cli_command, stdout=out, stderr=err)
        self.poller.start()
        try:
            self.app.run()
        finally:
            self.poller.stop()


@contextlib.contextmanager
def _screen_only_for_us(log_path: Path) -> Iterator[tuple[TextIO, Any, Any]]:
    """Yield a text stream on the terminal for prompt_toolkit, with fd 1/2 and ``sys.stdout``/``stderr``
    pointing at the shell log meanwhile (restored on the way out, whatever happens)."""
    log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    tty = open(os.dup(sys.__stdout__.fileno() if sys.__stdout__ else 1), "w", encoding="utf-8")  # noqa: SIM115
    saved = (os.dup(1), os.dup(2))
    old = (sys.stdout, sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        streams = install_streams(log)
        yield tty, streams[0], streams[1]
    finally:
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        tty.close()
        log.close()


def run_shell(cli_command: Any, address: str | None = None) -> None:
    """Connect to the cluster, take the terminal, and run the shell until ``exit``/Ctrl-D/Ctrl-C;
    ``cli_command`` is the ``dlnest-ray`` click group whose commands the shell runs.

    Leaving never deletes or stops a task: the shell only reads and submits."""
    from ...actors.home import default_home
    from ..cluster import connect_client

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DlnestError("the shell needs a terminal; in scripts use the commands (`dlnest-ray tasks` ...)")
    client = connect_client(address, create=False)  # before taking the screen: errors print normally
    from ...actors.auth import ensure_private_home

    home = ensure_private_home(default_home())
    with _screen_only_for_us(home / "shell.log") as (tty, out, err):
        shell = Shell(
            client,
            history_path=home / "shell_history",
            cli_command=cli_command,
            output=Vt100_Output.from_pty(tty),
        )
        shell.run((out, err))
