"""Queue commands (DLNest's client operations): ``run``, ``continue``, ``tasks``, ``del``, ``devices``,
``config``, ``log`` and ``watch``. Each reaches the center through :func:`.cluster.connect_client`."""

from __future__ import annotations

import inspect
import os
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..checks import checked_priority, checked_retries
from ..errors import DlnestError
from ..runenv import parse_env_options
from ..savepack.outputs import TaskSection, task_output_name
from ..tasks import TaskKind, TaskRecord, TaskStatus
from .cluster import connect_client
from .options import (
    MEMORY_HELP,
    AddressOpt,
    DescOpt,
    EnvOpt,
    FreqOpt,
    JsonOpt,
    NameByDescOpt,
    NoEnvOpt,
    NoPreemptOpt,
    NoSaveOpt,
    PriorityOpt,
    parse_memory,
)
from .tables import (
    console,
    devices_table,
    memory_line,
    print_json,
    settings_table,
    tasks_table,
    with_latest_metrics,
)

if TYPE_CHECKING:
    from ..actors.client import Client

__all__ = ["config", "continue_", "delete", "devices", "log", "run", "tasks", "watch"]

POLL_S = 0.5

MemoryOpt = Annotated[
    str | None,  # parsed by parse_memory: a bad value is one error line (exit 1), not a usage error
    typer.Option("--memory", "-m", metavar="MB|auto", help=MEMORY_HELP, show_default=False),
]
MultiOpt = Annotated[
    bool, typer.Option("--multi-gpu", help="One process on several GPUs when one GPU is not enough.")
]
DdpOpt = Annotated[bool, typer.Option("--ddp", help="DDP: one rank per GPU, GPUs of one node.")]
GpusOpt = Annotated[
    int | None, typer.Option("--gpus", metavar="K", help="With --ddp or --multi-gpu: exactly K GPUs.")
]
CpuOpt = Annotated[bool, typer.Option("--cpu", help="Run on CPUs only (never waits for a GPU).")]
RetriesOpt = Annotated[
    str | None,  # checked by checked_retries: a bad value is one error line (exit 1), not a usage error
    typer.Option(
        "--retries",
        metavar="N",
        help="Retries of an attempt that fails for a reason not its own (node lost, worker died, out of "
        "memory): resumed from its latest valid checkpoint. Default: the config's `retries`, else "
        "`config --retries` (2).",
        show_default=False,
    ),
]


@dataclass(frozen=True, kw_only=True)
class QueueOptions:
    """The options every queued run takes (``run``, ``continue``): where it runs, its environment, and
    how the answer is printed. :func:`queue_options` adds them to a command."""

    memory: str | int | None = None  # ``--memory`` as given: MB, ``auto`` or None (see memory_mb)
    multi_gpu: bool = False
    ddp: bool = False
    gpus: int | None = None
    cpu: bool = False
    env: list[str] | None = None
    no_env: bool = False
    retries: str | int | None = None  # ``--retries`` as given (see submit)
    priority: str | int | None = None  # ``--priority`` as given (see submit)
    no_preempt: bool = False
    as_json: bool = False
    address: str | None = None

    @property
    def placement(self) -> str:
        """The placement the flags name (the center checks the request itself, ``--gpus`` included)."""
        flags = (("--cpu", self.cpu), ("--multi-gpu", self.multi_gpu), ("--ddp", self.ddp))
        chosen = [name for name, on in flags if on]
        if len(chosen) > 1:
            raise DlnestError(f"{' and '.join(chosen)} exclude each other: choose one")
        return "cpu" if self.cpu else "multi" if self.multi_gpu else "ddp" if self.ddp else "gpu"

    @property
    def memory_mb(self) -> int | None:
        """MB per GPU as asked, or None for ``auto`` (no ``--memory``): dlnest-ray chooses; DlnestError
        for a value that is neither (:func:`~.options.parse_memory`)."""
        return parse_memory(self.memory)

    def request(self) -> dict[str, Any]:
        """The options as the client's submit methods take them (``memory_mb``, ``placement``, ``gpus``,
        ``env``, ``capture_env``, ``retries``, ``priority``, ``no_preempt``), each checked: a bad value is
        one DlnestError, before any cluster is asked."""
        return {
            "placement": self.placement,
            "memory_mb": self.memory_mb,
            "retries": None if self.retries is None else checked_retries(self.retries),
            "priority": 0 if self.priority is None else checked_priority(self.priority),
            "env": parse_env_options(self.env or []),
            "gpus": self.gpus,
            "capture_env": not self.no_env,
            "no_preempt": self.no_preempt,
        }

    def submit(self, send: Callable[..., str]) -> None:
        """Connect, ``send(client, placement=..., ...)`` the request, and print what was queued."""
        request = self.request()
        client = connect_client(self.address, create=True)
        task_id = send(client, **request)
        _report_submitted(client, task_id, self.as_json)


_QUEUE_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("memory", None, MemoryOpt),
        ("multi_gpu", False, MultiOpt),
        ("ddp", False, DdpOpt),
        ("gpus", None, GpusOpt),
        ("cpu", False, CpuOpt),
        ("env", None, EnvOpt),
        ("no_env", False, NoEnvOpt),
        ("retries", None, RetriesOpt),
        ("priority", None, PriorityOpt),
        ("no_preempt", False, NoPreemptOpt),
        ("as_json", False, JsonOpt),
        ("address", None, AddressOpt),
    )
]


def queue_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` (which takes ``**options``) the :class:`QueueOptions` as its Typer options, after
    its own: one definition of them for every command that queues a run."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # Typer reads the option metadata there
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    setattr(command, "__signature__", signature.replace(parameters=[*own, *_QUEUE_PARAMETERS]))  # noqa: B010
    return command


def _report_submitted(client: Client, task_id: str, as_json: bool) -> None:
    """What ``run``/``continue`` print: the task, its package, where its memory came from (the ``memory:``
    line, :func:`~.tables.memory_line`), why it waits. ``--json``: ``task_id``, ``package``, ``status``, and
    the memory keys of its row (``memory_mb``, ``mb_per_gpu``, ``memory_auto``, ``memory_source``)."""
    task = client.task(task_id)
    row = task.to_row()
    if as_json:
        memory = {k: row[k] for k in ("memory_mb", "mb_per_gpu", "memory_auto", "memory_source") if k in row}
        print_json({"task_id": task_id, "package": task.package, "status": task.status.value, **memory})
        return
    typer.echo(f"task: {task_id} ({task.status})")
    typer.echo(f"package: {task.package}")
    line = memory_line(row)
    if line:
        typer.echo(line)
    if task.status is TaskStatus.PENDING and task.wait_reason:
        typer.echo(f"waiting: {task.wait_reason}")


# ---------------------------------------------------------------------------------------------- submit
@queue_options
def run(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The project's root_config.json.")],
    freq: FreqOpt = None,
    desc: DescOpt = "",
    no_save: NoSaveOpt = False,
    name_by_desc: NameByDescOpt = False,
    **options: Any,
) -> None:
    """Queue a training run on the cluster; prints its task id and save package.

    The package (code snapshot, args.json) is created now, so later edits to the project do not change
    the run. The center starts it on a GPU where its memory fits (several runs may share a GPU); without
    --memory (or with --memory auto) dlnest-ray estimates it and right-sizes it after the first epoch,
    and `run` prints where the number came from. The run gets this shell's environment (less terminal
    and placement variables; see the README), like Slurm.
    """
    QueueOptions(**options).submit(
        lambda client, **request: client.run_train(
            config_path=str(config.expanduser().resolve()),
            freq_path=str(freq.expanduser().resolve()) if freq else "",
            description=desc,
            no_save=no_save,
            name_by_desc=name_by_desc,
            **request,
        )
    )


@queue_options
def continue_(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="A save package folder.")],
    ckpt: Annotated[
        int, typer.Option("--ckpt", "-c", metavar="ID", help="Checkpoint id (-1: latest valid).")
    ] = -1,
    desc: DescOpt = "",
    **options: Any,
) -> None:
    """Queue the continuation of a save package on the cluster.

    It resumes at the next epoch from the latest valid checkpoint (or --ckpt ID), appending its output,
    with this shell's environment (as `run`).
    """
    QueueOptions(**options).submit(
        lambda client, **request: client.continue_train(
            str(package.expanduser().resolve()), ckpt_id=ckpt, description=desc, **request
        )
    )


# ---------------------------------------------------------------------------------------------- queries
def tasks(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include finished tasks.")] = False,
    as_json: JsonOpt = False,
    address: AddressOpt = None,
) -> None:
    """List running and pending tasks (with why each waits); --all adds finished ones.

    A started run's row shows its latest epoch metrics (--json: ``latest_metrics``, else null).
    """
    client = connect_client(address, create=False)
    rows = client.task_rows(all_)  # with latest_metrics: the center read the metrics files
    if as_json:
        print_json(with_latest_metrics(rows))
        return
    state = client.center_state()
    if not state.authenticated:
        from .cluster import warn_unauthenticated

        warn_unauthenticated()
    if state.draining:
        typer.secho(
            "dlnest-ray is going down (`down` has begun): nothing new starts until `dlnest-ray up`",
            fg=typer.colors.YELLOW,
        )
    if not rows:
        typer.echo("no tasks" if all_ else "no running or pending tasks (`--all` shows finished ones)")
        return
    console().print(tasks_table(rows, title="Tasks" if all_ else "Running and pending tasks"))


def devices(as_json: JsonOpt = False, address: AddressOpt = None) -> None:
    """List the cluster's GPUs: total and free MB, MB reserved by dlnest-ray, enabled, and its tasks,
    each with its memory: reserved → measured peak (`6000 → 4210 MB`; auto: at launch → right-sized)."""
    client = connect_client(address, create=False)
    rows = [d.to_json() for d in client.get_devices_info()]
    if as_json:
        print_json(rows)
    elif not rows:
        typer.echo("no GPUs in the cluster: only --cpu runs can start")
    else:
        tasks = [t.to_row() for t in client.get_task_info(include_finished=False)]
        console().print(devices_table(rows, tasks))


def delete(
    task_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Task ids (see `tasks`).")],
    address: AddressOpt = None,
) -> None:
    """Delete tasks: a pending one leaves the queue, a running one is stopped (ends CANCELLED)."""
    client = connect_client(address, create=False)
    for task_id in task_ids:
        typer.echo(client.del_task(task_id))


# ---------------------------------------------------------------------------------------------- settings
def _get_settings(client: Client) -> dict[str, Any]:
    return client.get_settings().to_json()


def _device_labels(values: list[str], known: list[dict[str, Any]]) -> list[str]:
    """``node:gpuN`` labels from ``--devices`` values (comma-separated allowed; ``all``; ``gpuN`` or ``N``
    alone when the cluster has one node)."""
    labels = [f"{d['node']}:gpu{d['gpu']}" for d in known]
    nodes = sorted({str(d["node"]) for d in known})
    out: list[str] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if item == "all":
                out += labels
            elif ":" not in item and len(nodes) == 1:
                out.append(f"{nodes[0]}:gpu{item.removeprefix('gpu')}")
            else:
                out.append(item)
    return sorted(set(out))


def config(
    devices_: Annotated[
        list[str] | None,
        typer.Option(
            "--devices",
            metavar="NODE:gpuN",
            help="Enable exactly these GPUs (repeat or comma-separate; `all`; gpuN alone on one node).",
        ),
    ] = None,
    max_per_device: Annotated[
        int | None, typer.Option("--max-per-device", metavar="N", help="Most tasks sharing one GPU.")
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option("--delay", metavar="S", help="Seconds between scheduling passes (and launch cooldown)."),
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            metavar="X",
            help="Memory margin (>= 1, default 1.15): an auto run is right-sized to its measured peak × X, "
            "and learned estimates are earlier peaks × X.",
        ),
    ] = None,
    notify_webhook: Annotated[
        str | None,
        typer.Option(
            "--notify-webhook",
            metavar="URL",
            help="Default webhook (http(s)) told when a run ends; a run's notify.webhook replaces it; "
            '"" clears it.',
        ),
    ] = None,
    retries: Annotated[
        str | None,
        typer.Option(
            "--retries",
            metavar="N",
            help="Default retries of a run (>= 0, default 2) when its --retries and config do not say.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    address: AddressOpt = None,
) -> None:
    """Show the center's settings, or change them (enabled GPUs, tasks per GPU, delay, memory margin,
    notify webhook)."""
    if margin is not None and not margin >= 1:  # NaN included; the center checks it too
        raise DlnestError(
            f"--margin must be 1 or more (got {margin:g}): a reservation never goes below the peak"
        )
    default_retries = None if retries is None else checked_retries(retries)  # before connecting
    from ..actors.notify import check_webhook, redact_url  # here: `--help` stays light

    if notify_webhook:  # checked before connecting; the center checks it too
        check_webhook(notify_webhook, "--notify-webhook")
    client = connect_client(address, create=False)
    changed = False
    if devices_:
        known = [d.to_json() for d in client.get_devices_info()]
        disabled = client.change_devices(_device_labels(devices_, known))
        typer.echo(f"disabled devices: {', '.join(disabled) or 'none'}", err=as_json)
        changed = True
    # each given setting: (value, how the center takes it, what to print)
    changes: list[tuple[object, Callable[[], None], str]] = [
        (
            max_per_device,
            lambda: client.change_max_task_per_device(max_per_device or 0),
            f"max tasks per device: {max_per_device}",
        ),
        (delay, lambda: client.change_delay(delay or 0.0), f"scheduling delay: {delay or 0:g} s"),
        (margin, lambda: client.change_margin(margin or 0.0), f"memory margin: {margin or 0:g}"),
        (
            default_retries,
            lambda: client.change_retries(default_retries or 0),
            f"default retries: {default_retries}",
        ),
        (
            notify_webhook,
            lambda: client.change_notify_webhook(notify_webhook or ""),
            f"notify webhook: {redact_url(notify_webhook or '') or 'none'}",
        ),
    ]
    for value, change, said in changes:
        if value is not None:
            change()
            typer.echo(said, err=as_json)
            changed = True
    if as_json:
        print_json(_get_settings(client))
    elif not changed:
        devices = [d.to_json() for d in client.get_devices_info()]
        console().print(settings_table(_get_settings(client), devices))


def log(
    clear: Annotated[bool, typer.Option("--clear", help="Empty the center's message buffer.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new messages.")] = False,
    address: AddressOpt = None,
) -> None:
    """Print the center's own messages (queued, launched, finished, errors)."""
    client = connect_client(address, create=False)
    if clear:
        client.clear()
        typer.echo("cleared the center's messages", err=follow)
        if not follow:
            return
    offset = 0
    first = True
    try:
        while True:
            out = client.get_dlnest_output(offset)
            if out.get("missed") and not first:  # a first read starts at the oldest line still kept
                typer.echo(f"[missed {out['missed']} lines]")
            first = False
            for line in out.get("lines", []):
                typer.echo(line)
            offset = int(out["end"])
            if not follow:
                return
            time.sleep(1.0)
    except KeyboardInterrupt:
        return


# ---------------------------------------------------------------------------------------------- watch
def _copy_new(path: Path | None, offset: int, section: TaskSection) -> int:
    """Write the task's part of the bytes of ``path`` after ``offset`` to stdout; returns the new offset."""
    if path is None:
        return offset
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    _emit(section.feed(data))
    return offset + len(data)


def _emit(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def watch(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="A task id: T_... or A_... (see `tasks`).")],
    rank: Annotated[
        int | None, typer.Option("--rank", "-r", metavar="R", help="DDP rank whose output to show.")
    ] = None,
    start: Annotated[
        int | None,
        typer.Option("--from", metavar="N", help="An analyzer's output from line offset N (default 0)."),
    ] = None,
    address: AddressOpt = None,
) -> int:
    """Print a task's output and follow it until the task ends (Ctrl-C stops watching, not the task).

    A run: exit code 0 when it succeeded, 1 when it failed or was cancelled. An analyzer: its output
    lines (scripts, warnings, tracebacks); it also becomes the analyzer `exp SCRIPT` uses by default.
    """
    if rank is not None and rank < 0:
        raise DlnestError("--rank must be 0 or more")
    if start is not None and start < 0:
        raise DlnestError("--from must be 0 or more")
    is_analyzer = TaskKind.of(task_id) is TaskKind.ANALYZE
    if (start is not None and not is_analyzer) or (rank is not None and is_analyzer):
        raise DlnestError("--from is for analyzers (A_...), --rank for DDP runs (T_...)")
    client = connect_client(address, create=False)
    if is_analyzer:
        from .analysis import watch_analyzer

        return watch_analyzer(client, task_id, start or 0)
    task = client.task(task_id)
    package = Path(task.package)
    offset = 0
    path: Path | None = None
    section = TaskSection(task_id)  # a continued package's file holds other tasks' output too
    try:
        while True:
            path = path or package / task_output_name(task.to_row(), rank)
            offset = _copy_new(path, offset, section)
            if task.status.is_terminal() or section.done:
                break
            time.sleep(POLL_S)
            task = client.task(task_id)
        while not task.status.is_terminal():  # its part of the file is over (a later task's began)
            time.sleep(POLL_S)
            task = client.task(task_id)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped watching; {task_id} goes on (`dlnest-ray del {task_id}` stops it)", err=True)
        return 130
    rest = section.finish()
    _emit(rest)
    if (offset or rest) and not _ends_with_newline(path) and not section.done:
        typer.echo("")
    from .tables import latest_metrics_text, task_latest_metrics

    latest = latest_metrics_text(task_latest_metrics(task.to_row()))
    if latest:  # the run's task row, as `tasks` and the shell show it
        typer.echo(f"latest: {latest}")
    epochs = _epochs_line(task)
    if epochs:  # a DLNest life cycle that stops at `epoch >= epochs` trains one more than it says
        typer.echo(epochs)
    if task.status is not TaskStatus.SUCCEEDED:
        raise DlnestError(f"{task_id} {task.status}" + (f": {task.error}" if task.error else ""))
    typer.echo(f"{task_id} {task.status}")
    return 0


def _epochs_line(task: TaskRecord) -> str:
    """``epochs: finished epoch 2, 3 in all`` from the run's segment in its package ("" if unknown)."""
    from ..savepack.package import SavePackage

    try:
        segment = SavePackage.open(task.package).segment_of(task.task_id)
    except DlnestError:  # the package went away: its epochs are not told
        return ""
    finished = segment.finished_epoch if segment is not None else None
    if not isinstance(finished, int) or finished < 0:
        return ""
    return f"epochs: finished epoch {finished}, {finished + 1} in all"


def _ends_with_newline(path: Path | None) -> bool:
    if path is None or not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
