"""``up`` and ``down``, and how every cluster command reaches the Ray cluster and the center.

Finding the cluster: ``--address``, else ``RAY_ADDRESS``, else the head ``up`` started (``head.json``),
else the cluster the last ``ray start`` on this machine recorded (what ``ray.init(address="auto")``
reads first). Its GCS port is probed before ``ray.init`` (which keeps retrying a dead address for
minutes), so "no cluster" is one quick line.

``up`` starts a local head (``ray start --head``, in its own session) when no cluster answers, and
records that in ``<home>/head.json``; ``down`` stops only that head's processes (the ones in its
session), never another Ray cluster on the machine — ``ray stop`` would stop them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from ..actors.address import HEAD_FILE, STARTED_BY, quiet_sigterm, resolve_address
from ..actors.address import init_ray as _ray_init
from ..actors.address import ray_address_file as _ray_address_file
from ..actors.address import reachable as _reachable
from ..actors.address import read_head as _read_head
from ..actors.address import recorded_address as _recorded_address
from ..actors.address import state_home as _home
from ..checks import checked_nice
from ..errors import DlnestError
from ..tasks import TaskStatus
from .options import AddressOpt, HomeOpt

if TYPE_CHECKING:
    from ..actors.client import Client

__all__ = ["connect_client", "down", "resolve_address", "up"]

DEFAULT_GCS_PORT = 6379
RAY_WORKER_PORTS = (10002, 19999)  # `ray start`'s default --min/--max-worker-port
# Ray starts every worker at niceness 15 unless its node's raylet is told otherwise. A head `up` starts
# gives its workers the usual priority, so the center, the run supervisors and the analyzers (what
# answers people) stay ahead of the ranks, which lower theirs to their run's `nice` (default 10).
WORKER_NICENESS_ENV = "RAY_worker_niceness"
WORKER_NICENESS = "0"
# Linux's autogroup scheduling weighs each session as one group against the others, whatever the niceness
# of its threads: the head's session as a whole yields to the sessions people type in.
DEFAULT_HEAD_NICE = 10
DEFAULT_DASHBOARD_PORT = 8265
DOWN_WAIT_S = 60.0
STOP_GRACE_S = 10.0


# ---------------------------------------------------------------------------------------------- connect
def _no_cluster() -> DlnestError:
    from ..actors.names import NO_CLUSTER

    return DlnestError(NO_CLUSTER)


def connect_client(address: str | None, *, create: bool, home: Path | None = None) -> Client:
    """The center's client: over the center's local socket when this machine's center answers there
    (no ``--address``/``RAY_ADDRESS``; no Ray driver started: milliseconds), else on the cluster through
    Ray; one line "no Ray cluster: ..." when none answers."""
    if address is None and not os.environ.get("RAY_ADDRESS"):
        from ..actors.address import state_home
        from ..actors.fastpath import fast_client

        fast = fast_client(state_home(home))
        if fast is not None:
            quiet_sigterm()  # a follower told to stop exits 143, as on the Ray path
            return fast
    from ..actors import client

    connected = client.connect(address, create=create, home=str(home) if home else None)
    quiet_sigterm()
    return connected


def _init_ray(address: str, home: Path) -> Any:
    """Connect this command to the cluster (see :func:`connect_client`)."""
    ctx = _ray_init(address, home)
    quiet_sigterm()
    return ctx


def _center_exists() -> bool:
    from ..actors.names import center_exists

    return center_exists()


# ---------------------------------------------------------------------------------------------- head.json
def _gpu_count_default() -> int | None:
    from ..devices import FAKE_GPUS_ENV, parse_fake_gpus

    fake = os.environ.get(FAKE_GPUS_ENV)
    return parse_fake_gpus(fake)[0] if fake else None


def _head_auth(home: Path) -> tuple[dict[str, str], Path | None]:
    """The environment ``ray start --head`` runs with, and the token file: token mode with the token
    :func:`~dlnest_ray.actors.auth.head_token` finds or makes — unless the user set ``RAY_AUTH_MODE`` to
    something else, which is obeyed (with a warning)."""
    from ..actors.auth import MODE_ENV, PATH_ENV, head_token

    chosen = os.environ.get(MODE_ENV)
    if chosen is not None and chosen.lower() != "token":
        typer.secho(
            f"warning: {MODE_ENV}={chosen}: the head starts without authentication, so anyone who can reach "
            'its ports can run code as you (see README "Security")',
            fg=typer.colors.YELLOW,
            err=True,
        )
        return {}, None
    token = head_token(home)
    return {MODE_ENV: "token", PATH_ENV: str(token)}, token


def _start_head(
    home: Path, num_gpus: int | None, port: int, dashboard_port: int, nice: int
) -> dict[str, Any]:
    """``ray start --head`` in a new session, in token mode, that session's scheduling group at niceness
    ``nice`` (where Linux has autogroups; elsewhere nothing changes); returns what head.json records."""
    from ..actors.auth import ensure_private_home
    from ..atomic import atomic_write_json

    ensure_private_home(home)
    auth_env, token = _head_auth(home)
    gpus = num_gpus if num_gpus is not None else _gpu_count_default()
    cmd = [
        # the new session's group: set before anything of the head starts (a shell builtin, so a kernel
        # without autogroups, or one that refuses, changes nothing and starts the head all the same)
        "/bin/sh",
        "-c",
        f'{{ echo {nice} > /proc/self/autogroup; }} 2>/dev/null; exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--port",
        str(port),
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard_port),
        "--num-cpus",
        str(os.cpu_count() or 1),
    ]
    if gpus is not None:
        cmd += ["--num-gpus", str(gpus)]
    log_path = home / "ray_start.log"
    with open(log_path, "w", encoding="utf-8") as log:
        # Own session: every process of this head (workers included) carries its id, so `down` can stop
        # exactly these. Output to a file: the daemons inherit it, a pipe would never close.
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={WORKER_NICENESS_ENV: WORKER_NICENESS, **os.environ, **auth_env},  # the user's setting wins
        )
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = -1
    if code != 0:
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        _stop_session(proc.pid)
        raise DlnestError(f"`ray start --head` failed ({last[-300:]}); the whole output is in {log_path}")
    address = _recorded_address()
    if address is None:
        raise DlnestError(f"`ray start --head` recorded no cluster address; see {log_path}")
    info = {
        "started_by": STARTED_BY,
        "address": address,
        "session_id": proc.pid,
        "dashboard_port": dashboard_port,
        "num_gpus": gpus,
        "started_at": time.time(),
        "auth_token": str(token) if token is not None else None,
    }
    atomic_write_json(home / HEAD_FILE, info, mode=0o600)
    if token is not None:
        os.environ.update(auth_env)  # this process connects next: with the head's token
    return info


def _session_procs(sid: int) -> list[Any]:
    import importlib

    import ray  # noqa: F401 - puts Ray's bundled psutil on sys.path

    psutil: Any = importlib.import_module("psutil")
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid == os.getpid() or os.getsid(p.pid) != sid:
                continue
            # only Ray's processes: a stale head.json must never take an unrelated session with it
            if "ray" in str(p.info.get("name") or "") or "ray" in " ".join(p.info.get("cmdline") or []):
                found.append(p)
    return found


def _stop_session(sid: int) -> int:
    """Stop the processes of the head started in session ``sid``: the raylet (its workers end with it),
    then the rest, then the GCS; SIGTERM, then SIGKILL after a grace period. Returns how many there were."""
    import importlib

    if sid <= 1:
        return 0
    psutil: Any = importlib.import_module("psutil")
    total = len(_session_procs(sid))

    def name(p: Any) -> str:
        return str(p.info.get("name") or "")

    for wanted in (
        lambda n: n == "raylet",
        lambda n: n not in ("raylet", "gcs_server"),
        lambda n: True,
    ):
        group = [p for p in _session_procs(sid) if wanted(name(p))]
        for p in group:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(group, timeout=STOP_GRACE_S)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(alive, timeout=3)
    return total


def _forget_address(address: str) -> None:
    """Remove Ray's record of the last started cluster if it is the one just stopped (as `ray stop`)."""
    path = _ray_address_file()
    if path is not None and _recorded_address() == address:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- up
def _print_info(dashboard: str | None, client: Client, home: Path) -> None:
    from .tables import console, devices_table

    out = console()
    if dashboard:
        url = dashboard if "://" in dashboard else f"http://{dashboard}"
        out.print(f"dashboard: {url}")
    out.print(f"center state: {home}")
    devices = client.get_devices_info()
    if devices:
        out.print(devices_table([d.to_json() for d in devices]))
    else:
        out.print("no GPUs in the cluster: only --cpu runs can start")


def up(
    address: AddressOpt = None,
    num_gpus: Annotated[
        int | None,
        typer.Option(
            "--num-gpus",
            metavar="N",
            help="GPUs of a new local head (default: the count in $DLNEST_RAY_FAKE_GPUS, else detected).",
        ),
    ] = None,
    home: HomeOpt = None,
    port: Annotated[int, typer.Option("--port", help="GCS port of a new local head.")] = DEFAULT_GCS_PORT,
    dashboard_port: Annotated[
        int, typer.Option("--dashboard-port", help="Dashboard port of a new local head (0: any free one).")
    ] = DEFAULT_DASHBOARD_PORT,
    nice: Annotated[
        int,
        typer.Option(
            "--nice",
            metavar="N",
            help="Niceness (0-19) of a new local head's processes as one group against other sessions' "
            "(Linux autogroup scheduling): commands typed in a terminal get the CPUs first. 0: none.",
        ),
    ] = DEFAULT_HEAD_NICE,
) -> None:
    """Start dlnest-ray: a local Ray head when no cluster answers, and the center.

    The head accepts only clients holding its auth token (made in the home folder unless one exists;
    `up` prints where it is and how another machine or user joins). With a cluster you started
    (--address, $RAY_ADDRESS, or `ray start` on this machine) only the center is created, and `down`
    leaves the cluster running. Running `up` again only prints the status.
    """
    state = _home(home)
    if num_gpus is not None and num_gpus < 0:
        raise DlnestError("--num-gpus must be 0 or more")
    checked_nice(nice, "--nice")
    if not 1 <= port <= 65535 or RAY_WORKER_PORTS[0] <= port <= RAY_WORKER_PORTS[1]:
        raise DlnestError(
            f"--port {port} cannot be the GCS port: use 1-65535 outside {RAY_WORKER_PORTS[0]}-"
            f"{RAY_WORKER_PORTS[1]}, which Ray keeps for its workers (default {DEFAULT_GCS_PORT})"
        )
    resolved = resolve_address(address, state)
    head = _read_head(state)
    started = None
    if resolved is None or not _reachable(resolved):
        if address or os.environ.get("RAY_ADDRESS"):
            raise DlnestError(
                f"nothing answers at {resolved or address}: start that cluster, or unset RAY_ADDRESS "
                "and drop --address to let `dlnest-ray up` start a local one"
            )
        if head is not None:  # a head we started that no longer answers: clear what is left of it
            _stop_session(int(head.get("session_id") or 0))
            (state / HEAD_FILE).unlink(missing_ok=True)
        started = _start_head(state, num_gpus, port, dashboard_port, nice)
        resolved = str(started["address"])
    elif num_gpus is not None and (head is None or head.get("num_gpus") != num_gpus):
        typer.echo(f"note: the Ray cluster at {resolved} is already running; --num-gpus is ignored", err=True)
    ctx = _init_ray(resolved, state)
    existed = _center_exists() and not _replace_orphaned_center()
    from ..actors import client as client_mod

    client = client_mod.connect(resolved, create=True, home=str(state))
    reopened = client.open_queue()
    dashboard = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if started is not None:
        typer.echo(f"started a local Ray head at {resolved} (`dlnest-ray down` stops it)")
    if existed:
        typer.echo(f"dlnest-ray is already up (Ray cluster {resolved})")
    else:
        typer.echo(f"dlnest-ray is up (Ray cluster {resolved})")
    if reopened:
        typer.echo("the queue was draining (an unfinished `down`): launches resume")
    _print_info(dashboard, client, state)
    _print_auth(client, resolved, started)


def _print_auth(client: Client, address: str, started: dict[str, Any] | None) -> None:
    """Where the token is and how others join; or the one warning that the cluster has no auth."""
    import os

    from ..actors.auth import PATH_ENV

    if not client.center_state().authenticated:
        warn_unauthenticated()
        return
    token = os.environ.get(PATH_ENV) or (started or {}).get("auth_token")
    if not token:
        typer.echo("auth: this cluster requires a token (RAY_AUTH_TOKEN)")
        return
    typer.echo(f"auth token: {token} (clients need it; keep it private)")
    typer.echo(
        f"  another machine joins: {PATH_ENV}={token} RAY_AUTH_MODE=token "
        f"{WORKER_NICENESS_ENV}={WORKER_NICENESS} ray start --address {address}"
    )
    typer.echo(f"  another user or shell: {PATH_ENV}={token} dlnest-ray tasks --address {address}")


def warn_unauthenticated() -> None:
    typer.secho(
        'warning: this cluster accepts unauthenticated clients: see README "Security"',
        fg=typer.colors.YELLOW,
        err=True,
    )


def _replace_orphaned_center() -> bool:
    """A center whose owner driver has ended (killed, or made by an older dlnest-ray from a CLI process)
    would leave Ray marking its runs FAILED: replace it by one with a live owner. Its state is on disk
    and running runs go on (their supervisors are detached). Returns whether it was replaced."""
    import ray
    from ray._private.state import jobs

    from ..actors.center_actor import remove_center
    from ..actors.client import connect

    job = connect(None, create=False).owner_job()
    table: list[dict[str, Any]] = cast(Any, jobs)()  # untyped in Ray
    dead = {str(j.get("JobID")) for j in table if j.get("IsDead")}
    if job not in dead:
        return False
    typer.echo(f"note: the center's owner (Ray job {job}) has ended; starting a new center (runs go on)")
    remove_center()  # its device monitors too: they belong to the same ended job
    deadline = time.monotonic() + 30
    while _center_exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    del ray
    return True


# ---------------------------------------------------------------------------------------------- down
def _drain(client: Client, force: bool, limit_s: float) -> list[str]:
    """Refuse (runs running, no --force), or drain the center — nothing launches from now on, so a run
    waiting for a GPU that a cancel frees stays queued — cancel the running tasks (--force) and wait for
    their end; returns those still running."""
    running = [t.task_id for t in client.get_task_info() if t.status.is_active()]
    if running and not force:
        raise DlnestError(
            f"{len(running)} task(s) running ({', '.join(running)}): wait for them, delete them with "
            "`dlnest-ray del ID`, or use `dlnest-ray down --force` to cancel them"
        )
    client.drain(cancel_running=force)
    if not running:
        return []
    typer.echo(f"cancelling {', '.join(running)}; nothing new starts")
    deadline = time.monotonic() + limit_s
    while True:
        status = {t.task_id: t.status for t in client.get_task_info(include_finished=True)}
        left = [t for t in running if (s := status.get(t)) is not None and s.is_active()]
        if not left or time.monotonic() > deadline:
            back = [t for t in running if status.get(t) is TaskStatus.PENDING]
            if back:
                typer.echo(f"{', '.join(back)} had not started: back in the queue for the next `up`")
            return left
        time.sleep(0.5)


def _kill_center_and_monitors() -> None:
    from ..actors.center_actor import remove_center

    remove_center()


def down(
    force: Annotated[
        bool, typer.Option("--force", help="Cancel running tasks (and wait for them to end) first.")
    ] = False,
    address: AddressOpt = None,
    home: HomeOpt = None,
    wait: Annotated[
        float, typer.Option("--wait", metavar="S", help="With --force: how long to wait for runs to end.")
    ] = DOWN_WAIT_S,
) -> None:
    """Stop dlnest-ray: the center, and the local Ray head if `dlnest-ray up` started it.

    Refuses while tasks run, unless --force (which cancels them and waits for their end). Pending tasks
    stay queued in the center's state folder for the next `up`. Other Ray clusters are left alone.
    """
    state = _home(home)
    import ray

    head = _read_head(state)
    resolved = resolve_address(address, state)
    reachable = resolved is not None and _reachable(resolved)
    ours = head is not None and (resolved is None or head.get("address") == resolved)
    did = False
    if reachable:
        assert resolved is not None
        _init_ray(resolved, state)
        if _center_exists():
            from ..actors import client as client_mod

            client = client_mod.connect(resolved, create=False)
            left = _drain(client, force, wait)
            if left and not ours:
                raise DlnestError(
                    f"{', '.join(left)} did not end within {wait:g} s; run `dlnest-ray down --force` again "
                    "(meanwhile nothing new starts; `dlnest-ray up` opens the queue again)"
                )
            if left:
                typer.echo(f"{', '.join(left)} did not end within {wait:g} s; stopping the head ends them")
            pending = [t.task_id for t in client.get_task_info() if t.status is TaskStatus.PENDING]
            _kill_center_and_monitors()
            did = True
            typer.echo(
                "stopped the center" + (f" ({len(pending)} pending task(s) stay queued)" if pending else "")
            )
        ray.shutdown()
    if head is not None and ours:
        n = _stop_session(int(head.get("session_id") or 0))
        if head.get("address"):
            _forget_address(str(head["address"]))
        with contextlib.suppress(FileNotFoundError):
            (state / HEAD_FILE).unlink()
        if n:
            typer.echo(f"stopped the local Ray head at {head.get('address')}")
        did = did or n > 0
    elif reachable:
        typer.echo(f"the Ray cluster at {resolved} was not started by dlnest-ray: left running")
    if not did:
        typer.echo("dlnest-ray is not running")
