"""The center's owner: a Ray driver on the head node that lives exactly as long as the center.

Ray gives every task and actor the *job* of the driver that (transitively) created it, and when that
driver exits, Ray's state API marks every task of its job that has not ended yet as ``FAILED`` ("Job
finishes as driver exits"), even when the task goes on and later succeeds. The center used to be
created by whichever CLI process found it missing (``up``, ``run``), which exits at once, so the
dashboard showed every run's rank tasks as failed. Now the center is always created by this owner,
a small driver process started on the head node, which stays connected until the center is removed
(``down``) and then exits. Runs, supervisors and analyzers descend from the center, so their job is
the owner's, which is alive while they run: the dashboard shows their real states.

:func:`ensure_center` is the one way the CLI and ``dlnest_ray.connect()`` get a center: an existing one
as it is, else a new owner is started (by a zero-CPU Ray task on the head node, so it runs with the
cluster's own Python, on the machine whose life the cluster shares) and awaited. The owner process is
detached twice from that task's worker (Ray kills a worker's children when the worker exits) and
leads its own process group; on a head ``up`` started it stays in the head's session, so ``down``'s
sweep of that session would end it even if it missed the center's removal. Its output goes to
``<home>/center_owner.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

from ..errors import DlnestError
from .auth import ensure_private_home
from .home import default_home
from .names import CENTER_NAME, NAMESPACE, center_exists, get_center
from .procs import pid_alive

__all__ = ["OWNER_LOG", "ensure_center", "main"]

OWNER_LOG = "center_owner.log"
START_TIMEOUT_S = 120.0
LAUNCH_TIMEOUT_S = 60.0
POLL_S = 1.0
WATCHDOG_S = 30.0  # a center check that hangs this long means the cluster is gone

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- client side
def ensure_center(home: str | None = None) -> Any:
    """The center's handle; when there is none, start its owner on the head node and wait for it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        return get_center()
    except DlnestError:
        pass
    state = str(Path(home).expanduser().resolve() if home else default_home())
    head = _head_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=head, soft=True) if head else "DEFAULT"
    spawn: Any = ray.remote(_spawn_owner)
    ref = spawn.options(
        num_cpus=0, max_retries=0, name="dlnest-ray: start the center", scheduling_strategy=strategy
    ).remote(state, ray.get_runtime_context().gcs_address)
    try:
        error = ray.get(ref, timeout=START_TIMEOUT_S + 10)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref)  # its owner is stopped: no center appears after this answer
        raise DlnestError(
            f"the dlnest-ray center did not start within {START_TIMEOUT_S:g} s; "
            f"see {Path(state) / OWNER_LOG} on the head node"
        ) from None
    if error:
        raise DlnestError(f"the dlnest-ray center could not start: {error}")
    return get_center()


def _head_node_id() -> str | None:
    import ray

    nodes: list[dict[str, Any]] = cast(Any, ray).nodes()  # untyped in Ray
    for node in nodes:
        if node.get("Alive") and "node:__internal_head__" in (node.get("Resources") or {}):
            return str(node["NodeID"])
    return None


def _spawn_owner(home: str, gcs_address: str) -> str:
    """Runs as a Ray task on the head node: start the owner there and wait until the center answers.
    Returns "" when it does, else why not (the end of the owner's log)."""
    log_path = ensure_private_home(Path(home)) / OWNER_LOG
    env = dict(os.environ)
    for flag in ("RAY_JOB_ID", "RAY_RAYLET_PID", "RAY_OVERRIDE_NODE_ID_FOR_TESTING"):  # worker-only
        env.pop(flag, None)
    env["RAY_ADDRESS"] = gcs_address
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the center's owner\n")
        out.flush()
        try:
            launcher = subprocess.run(
                [sys.executable, "-m", "dlnest_ray.actors.owner", "--home", home, "--address", gcs_address],
                stdout=subprocess.PIPE,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=LAUNCH_TIMEOUT_S,
                check=False,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return f"the owner's launcher did not return within {LAUNCH_TIMEOUT_S:g} s; see {log_path}"
    try:
        pid = int(launcher.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"the owner did not start (exit {launcher.returncode}); see {log_path}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if center_exists():
                return ""
            if not pid_alive(pid):
                return f"the owner ended early: {_last_line(log_path)} (whole log: {log_path})"
            time.sleep(0.2)
    except BaseException:  # cancelled by the waiting client: no owner may create a center after it gave up
        _stop_owner(pid)
        raise
    _stop_owner(pid)
    return f"no center after {START_TIMEOUT_S:g} s; see {log_path}"


def _stop_owner(pid: int) -> None:
    """End an owner whose center never answered (it leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError) as e:
        log.info("stopping the center's owner %d: %s", pid, e)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][-300:] if lines else "no output"


# ---------------------------------------------------------------------------------------------- the owner
def _detach() -> None:
    """Fork: the parent prints the child's pid and exits, so the child is no Ray worker's child (Ray
    kills those when the worker exits); the child leads a process group of its own (a worker's group is
    killed with it) but stays in the session (``down`` of a head ``up`` started sweeps that session)."""
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stdout (the pid pipe) → the log, like stderr


def _watchdog(beat: list[float]) -> None:
    """Exit when a check of the center hangs: the cluster went away under this driver."""
    while True:
        time.sleep(WATCHDOG_S / 3)
        if time.monotonic() - beat[0] > WATCHDOG_S:
            print("the cluster stopped answering: the owner exits", flush=True)
            os._exit(0)


def serve(home: str, address: str) -> int:
    """Connect, create the center (owned by this driver's job), and stay until it is removed."""
    import ray

    from .center_actor import get_or_create_center

    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    job = ray.get_runtime_context().get_job_id()
    if center_exists():
        print(f"a center exists already: this owner (job {job}) is not needed", flush=True)
        return 0
    center = get_or_create_center(home)
    owner = ray.get(center.owner_job.remote())
    if owner != job:  # another owner created it a moment before us
        print(f"the center belongs to job {owner}: this owner (job {job}) is not needed", flush=True)
        return 0
    print(f"center {CENTER_NAME} created, owned by job {job} (pid {os.getpid()})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    beat = [time.monotonic()]
    threading.Thread(target=_watchdog, args=(beat,), name="owner-watchdog", daemon=True).start()
    while not stop.wait(POLL_S):
        try:
            if not center_exists():
                print("the center was removed: the owner exits", flush=True)
                break
        except Exception as e:  # the cluster is going away: nothing left to own
            print(f"cannot reach the cluster ({type(e).__name__}: {e}): the owner exits", flush=True)
            break
        beat[0] = time.monotonic()
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlnest_ray.actors.owner", description=__doc__)
    parser.add_argument("--home", required=True, help="the center's state folder")
    parser.add_argument("--address", required=True, help="the cluster's GCS address")
    parser.add_argument("--foreground", action="store_true", help="do not detach (for debugging)")
    args = parser.parse_args(argv)
    if not args.foreground:
        _detach()
    try:
        return serve(args.home, args.address)
    except Exception as e:
        print(f"the owner failed: {type(e).__name__}: {e}", flush=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
