"""Analyzer commands: ``analyze`` (queue a persistent analyzer, or with --script run one script in this
process), ``exp`` (run a script on an analyzer, streaming its output) and ``watch`` of an analyzer.

``exp`` without an analyzer id uses the analyzer last started with ``analyze`` or followed with
``watch`` (remembered in ``$DLNEST_RAY_HOME/cli.json``), as DLNest's client used the watched one.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..actors.jobs import JobState
from ..checks import checked_priority
from ..errors import DlnestError
from ..tasks import TaskStatus
from .cluster import connect_client
from .options import AddressOpt, EnvOpt, NoEnvOpt, PriorityOpt, parse_memory
from .tables import print_json

if TYPE_CHECKING:
    from ..actors.client import Client

__all__ = ["analyze", "exp", "remembered_analyzer", "watch_analyzer"]

STATE_FILE = "cli.json"
ANALYZER_ID = re.compile(r"^A_\d+$")


# ---------------------------------------------------------------------------------------------- CLI state
def _state_path() -> Path:
    from ..actors.home import default_home

    return default_home() / STATE_FILE


def remembered_analyzer() -> str | None:
    """The analyzer last started or watched from this machine's CLI, if any."""
    try:
        value = json.loads(_state_path().read_text(encoding="utf-8")).get("analyzer")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def remember_analyzer(task_id: str) -> None:
    from ..atomic import atomic_write_json

    path = _state_path()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        state = state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        state = {}
    from ..actors.auth import ensure_private_home

    ensure_private_home(path.parent)
    atomic_write_json(path, {**state, "analyzer": task_id}, mode=0o600)


# ---------------------------------------------------------------------------------------------- analyze
def analyze(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="A save package folder.")],
    ckpt: Annotated[
        int,
        typer.Option("--ckpt", "-c", metavar="ID", help="Checkpoint id (-1: latest valid; -2: load none)."),
    ] = -1,
    scripts: Annotated[
        Path | None,
        typer.Option(
            "--scripts",
            metavar="DIR",
            help="Scripts folder (default: the project's AnalyzeScripts/, else the package's copy).",
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            "-m",
            metavar="MB|auto",
            help="GPU memory to reserve in MB, or auto (the default: the run's measured peak plus a CUDA "
            "context, else 90% of a GPU).",
        ),
    ] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Load onto the CPU (never waits for a GPU).")] = False,
    script: Annotated[
        Path | None,
        typer.Option(
            "--script",
            "-s",
            metavar="SCRIPT",
            help="Run this one script in this process and exit, instead of queuing an analyzer.",
        ),
    ] = None,
    env: EnvOpt = None,
    no_env: NoEnvOpt = False,
    priority: PriorityOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    address: AddressOpt = None,
) -> None:
    """Start an analyzer: a warm process on the cluster that loads PACKAGE once (copied code, dataset,
    model, checkpoint) and then runs `dlnest-ray exp SCRIPT` calls against it, each in milliseconds.

    It is queued like a training run and holds its GPU memory until `dlnest-ray del A_ID`; a run of
    higher --priority preempts it only once it has been idle (no script) for two minutes.
    With --script, load the package here, run that one script's experience(self), and exit.
    """
    if script is not None:
        if memory is not None or as_json or env or no_env or priority is not None:
            raise DlnestError(
                "--memory, --env, --no-env, --priority and --json are for a queued analyzer; "
                "--script runs here"
            )
        from .foreground import analyze_once

        analyze_once(package, script, scripts_dir=scripts, ckpt=ckpt, cpu=cpu)
        return
    from ..runenv import parse_env_options

    extra = parse_env_options(env or [])
    memory_mb = parse_memory(memory)  # a bad value is one line before any connection
    level = 0 if priority is None else checked_priority(priority)
    client = connect_client(address, create=True)
    task_id = client.analyze(
        str(package.expanduser().resolve()),
        ckpt_id=ckpt,
        scripts_dir=str(scripts.expanduser().resolve()) if scripts else "",
        memory_mb=memory_mb,
        placement="cpu" if cpu else "gpu",
        env=extra,
        capture_env=not no_env,
        priority=level,
    )
    remember_analyzer(task_id)
    task = client.task(task_id)
    if as_json:
        keys = (
            "task_id",
            "package",
            "scripts",
            "status",
            "memory_mb",
            "mb_per_gpu",
            "node",
            "gpus",
            "ckpt_id",
        )
        row = task.to_row()
        print_json({k: row[k] for k in keys})
        return
    typer.echo(f"analyzer: {task_id} ({task.status})")
    typer.echo(f"package: {task.package}")
    typer.echo(f"scripts: {task.scripts}")
    if task.status is TaskStatus.PENDING and task.wait_reason:
        typer.echo(f"waiting: {task.wait_reason}")
    elif task.gpus:
        typer.echo(f"memory: {task.mb_per_gpu} MB on {task.node}:gpu{task.gpus[0]}")
    typer.echo(f"run a script: dlnest-ray exp {task_id} SCRIPT   (end it: dlnest-ray del {task_id})")


# ---------------------------------------------------------------------------------------------- exp
def _target(words: list[str]) -> tuple[str, str]:
    if len(words) == 2:
        return words[0], words[1]
    if len(words) != 1:
        raise DlnestError("usage: dlnest-ray exp [A_ID] SCRIPT")
    if ANALYZER_ID.match(words[0]):
        raise DlnestError(f"give the script to run on {words[0]}: dlnest-ray exp {words[0]} SCRIPT")
    remembered = remembered_analyzer()
    if remembered is None:
        raise DlnestError(
            "which analyzer? give its id (dlnest-ray exp A_ID SCRIPT) or `dlnest-ray watch A_ID`"
        )
    return remembered, words[0]


def _script_arg(script: str) -> str:
    """A path to an existing local file is sent absolute (it must lie in the scripts folder); anything
    else is a name the analyzer looks up in its folder."""
    local = Path(script).expanduser()
    if local.is_file() and (local.suffix == ".py" or "/" in script):
        return str(local.resolve())
    return script


def exp(
    target: Annotated[
        list[str],
        typer.Argument(
            metavar="[A_ID] SCRIPT",
            help="The analyzer (default: the last one started or watched) and a script name in its folder.",
        ),
    ],
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", "-t", metavar="S", help="Interrupt the script after S seconds."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON (the script's output goes to stderr).")
    ] = False,
    address: AddressOpt = None,
) -> int:
    """Run experience(self) from SCRIPT on a warm analyzer, printing its output as it comes.

    The file is read afresh each time, so edits take effect; what a script stores on `self` stays for the
    next one. Calls on one analyzer run one after another. Exit 1 (traceback shown) if the script raised
    or was interrupted; Ctrl-C interrupts the script, and the analyzer stays loaded.
    """
    task_id, script = _target(target)
    client = connect_client(address, create=False)

    def waiting(reason: str) -> None:
        typer.echo(f"waiting for {task_id}: {reason}", err=True)

    job = client.submit_exp(task_id, _script_arg(script), timeout, wait=True, on_wait=waiting)
    offset = 0
    try:
        while True:
            out = client.poll_exp(task_id, int(job["job"]), offset, wait_s=1.0)
            _print_lines(out, err=as_json)
            offset, job = int(out["end"]), out["job"]
            if JobState(job["state"]).is_terminal():
                break
    except KeyboardInterrupt:
        client.cancel_exp(task_id, int(job["job"]))
        typer.echo(f"\ninterrupted {script} on {task_id}; the analyzer stays loaded", err=True)
        return 130
    if as_json:
        print_json({"task_id": task_id, **job})
    state = JobState(job["state"])
    if state is JobState.SUCCEEDED:
        if job.get("result") is not None and not as_json:
            typer.echo(f"result: {job['result']}")
        return 0
    if state is JobState.INTERRUPTED:
        raise DlnestError(f"{script} on {task_id}: {job['error']}; the analyzer stays loaded")
    raise DlnestError(f"{script} failed on {task_id}: {job['error']}")


def _print_lines(out: dict[str, Any], *, err: bool = False) -> None:
    if out.get("missed"):
        typer.echo(f"[missed {out['missed']} lines: the analyzer's buffer dropped them]", err=err)
    for line in out.get("lines", []):
        typer.echo(line, err=err)


# ---------------------------------------------------------------------------------------------- watch
def watch_analyzer(client: Client, task_id: str, start: int = 0) -> int:
    """Print an analyzer's output from line ``start`` and follow it until the analyzer ends; Ctrl-C
    only stops watching (DLNest's withdraw). An ended analyzer's output is read from its package."""
    client.task(task_id)  # an unknown id is an error before anything is remembered
    remember_analyzer(task_id)
    offset = max(0, start)
    try:
        while True:
            out = client.get_analyze_output(task_id, offset, wait_s=1.0)
            _print_lines(out)
            offset = int(out["end"])
            if not out["alive"]:
                break
        task = client.task(task_id)
        while not task.status.is_terminal():  # closed: its supervisor reports the end in a moment
            time.sleep(0.25)
            task = client.task(task_id)
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped watching; {task_id} stays loaded (`dlnest-ray del {task_id}` ends it)", err=True
        )
        return 130
    if task.status is TaskStatus.SUCCEEDED:
        typer.echo(f"{task_id} ended")
        return 0
    error = f": {task.error}" if task.error else ""
    raise DlnestError(f"{task_id} {task.status}{error}")
