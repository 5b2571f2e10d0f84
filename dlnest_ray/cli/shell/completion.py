"""Completion of the shell's command line: verbs, each verb's flags (read from the CLI's own Typer
commands, so they cannot drift), task ids from the task pane, paths, and the watched analyzer's script
names. :func:`candidates` is pure; :class:`ShellCompleter` adapts it to prompt_toolkit."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from ...tasks import TaskKind
from .commands import CLI_VERBS, SHELL_VERBS

__all__ = [
    "CommandSpec",
    "CompletionContext",
    "ShellCompleter",
    "candidates",
    "path_candidates",
    "specs_from_click",
]

PATH_ARG_VERBS = ("run", "continue", "analyze", "new", "metrics", "compare")
MANY_PATHS = ("compare",)
TASK_ARG_VERBS = ("del", "watch")
PATH_FLAGS = ("--freq", "-f", "--scripts", "--plot", "--data")
HIDDEN_FLAGS = ("--address",)  # the shell is already connected


@dataclass(kw_only=True, frozen=True)
class CommandSpec:
    """A verb's options: flag name → whether it takes a value."""

    flags: dict[str, bool] = field(default_factory=dict)


def specs_from_click(group: Any) -> dict[str, CommandSpec]:
    """The flags of every command of the CLI's click group (``typer.main.get_command(app)``), plus
    the shell's ``exp`` flags (the shell runs ``exp`` itself)."""
    specs: dict[str, CommandSpec] = {}
    for name, command in getattr(group, "commands", {}).items():
        flags: dict[str, bool] = {}
        for param in command.params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if opt not in HIDDEN_FLAGS:
                    flags[opt] = not bool(getattr(param, "is_flag", False))
        specs[name] = CommandSpec(flags=flags)
    specs["exp"] = CommandSpec(flags={"--timeout": True, "-t": True})
    return specs


@dataclass(kw_only=True)
class CompletionContext:
    """What completion may offer now: the specs, the task ids in the task pane, the watched analyzer,
    a way to list an analyzer's scripts (may be slow: called only when a script name is wanted), and
    the folder relative paths start from."""

    specs: dict[str, CommandSpec]
    task_ids: Sequence[str] = ()
    watched: str | None = None
    scripts_for: Callable[[str], list[str]] = lambda _task_id: []
    cwd: Path = field(default_factory=Path.cwd)


def path_candidates(word: str, cwd: Path) -> list[str]:
    """Entries of the folder ``word`` points into whose names start with its last part, as
    replacements for ``word`` (folders end with ``/``; dot files only when asked for)."""
    folder, _, base = word.rpartition("/")
    if word.startswith("/") and not folder:
        folder = "/"
    prefix = word[: len(word) - len(base)]
    where = Path(os.path.expanduser(folder)) if folder else Path(".")
    if not where.is_absolute():
        where = cwd / where
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(base) or (entry.name.startswith(".") and not base.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        out.append(prefix + entry.name + ("/" if is_dir else ""))
    return out


def _starting(options: Iterable[str], word: str) -> list[str]:
    seen: dict[str, None] = {}
    for option in options:
        if option.startswith(word):
            seen.setdefault(option, None)
    return list(seen)


def _positionals(words: Sequence[str], spec: CommandSpec) -> list[str]:
    """The positional arguments among ``words`` (a flag's value is not one)."""
    out = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = spec.flags.get(word.split("=", 1)[0], False) and "=" not in word
        else:
            out.append(word)
    return out


def candidates(text: str, ctx: CompletionContext) -> tuple[str, list[str]]:
    """The word being completed at the end of ``text`` and its candidates (replacements for it)."""
    words = text.split()
    word = "" if not text or text[-1].isspace() else words.pop()
    if not words:
        return word, _starting([*CLI_VERBS, *SHELL_VERBS], word)
    verb, before = words[0], words[1:]
    spec = ctx.specs.get(verb, CommandSpec())
    previous = before[-1] if before else ""
    if previous.startswith("-") and spec.flags.get(previous, False):
        return word, path_candidates(word, ctx.cwd) if previous in PATH_FLAGS else []
    if word.startswith("-"):
        used = set(before)
        return word, _starting((f for f in spec.flags if f not in used), word)
    position = len(_positionals(before, spec))
    if verb in TASK_ARG_VERBS and (verb == "del" or position == 0):
        return word, _starting(ctx.task_ids, word)
    if verb == "exp":
        if position == 0:
            analyzers = [t for t in ctx.task_ids if TaskKind.of(t) is TaskKind.ANALYZE]
            scripts = ctx.scripts_for(ctx.watched) if ctx.watched else []
            return word, _starting([*analyzers, *scripts], word)
        first = _positionals(before, spec)[0]
        if position == 1 and TaskKind.of(first) is TaskKind.ANALYZE:
            return word, _starting(ctx.scripts_for(first), word)
        return word, []
    if verb in PATH_ARG_VERBS and (position == 0 or verb in MANY_PATHS):
        return word, path_candidates(word, ctx.cwd)
    return word, []


class ShellCompleter(Completer):
    """prompt_toolkit's ``Completer`` over :func:`candidates`. Wrap it in a ``ThreadedCompleter``:
    listing an analyzer's scripts is a cluster call."""

    def __init__(self, context: Callable[[], CompletionContext]) -> None:
        self.context = context

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        word, options = candidates(document.text_before_cursor, self.context())
        for option in options:
            name = option.rstrip("/").rpartition("/")[2] + ("/" if option.endswith("/") else "")
            yield Completion(option, start_position=-len(word), display=name)
