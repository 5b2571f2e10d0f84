"""Running a package's training as a DDP run on CPU (gloo): one process per rank with the usual env."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["free_port", "run_ranks"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(
    pkg: Path, logs_dir: Path, *, world: int = 2, timeout: float = 240, code: str | None = None
) -> tuple[list[int], str]:
    """Train ``pkg`` with ``world`` ranks (each runs ``code``, by default a plain CPU ``train`` of the
    package, in ``logs_dir``); returns (exit codes, the logs and output files' tails)."""
    code = code or (
        "from dlnest_ray.runtime.trainer import train, TrainOptions; "
        f"train({str(pkg)!r}, TrainOptions(cpu=True))"
    )
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for rank in range(world):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            }
            log = open(logs_dir / f"proc{rank}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code], env=env, cwd=logs_dir, stdout=log, stderr=subprocess.STDOUT
                )
            )
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    details = "\n".join(
        f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
        for f in [*sorted(logs_dir.glob("proc*.log")), *sorted(pkg.glob("_output*.txt"))]
    )
    return codes, details
