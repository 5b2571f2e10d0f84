"""Running the ``dlnest-ray`` command line in a child process."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cli", "package_from", "run_cli", "run_cli_tty_stderr", "single_error_line"]


@dataclass
class Cli:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.update(extra or {})
    return env


def run_cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> Cli:
    """``python -m dlnest_ray ARGS`` (the ``dlnest-ray`` command) with stdout and stderr captured."""
    proc = subprocess.run(
        [sys.executable, "-m", "dlnest_ray", *map(str, args)],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Cli(proc.returncode, proc.stdout, proc.stderr)


def run_cli_tty_stderr(
    *args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> Cli:
    """Like :func:`run_cli`, with stderr on a pseudo-terminal (so colours are kept); stdout to a file."""
    master, slave = pty.openpty()
    out_path = Path(cwd) / ".cli_stdout.txt"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlnest_ray", *map(str, args)],
            cwd=cwd,
            env=_env(env),
            stdout=out,
            stderr=slave,
            stdin=subprocess.DEVNULL,
        )
        os.close(slave)
        chunks = []
        try:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            code = proc.wait(timeout=timeout)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout = out_path.read_text(errors="replace")
    out_path.unlink()
    return Cli(code, stdout, b"".join(chunks).decode(errors="replace"))


def single_error_line(result: Cli) -> str:
    """Assert the command failed with exit 1 and exactly one ``error:`` line on stderr; return it."""
    assert result.returncode == 1, str(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, str(result)
    assert lines[0].startswith("error: "), str(result)
    return lines[0]


def package_from(result: Cli) -> Path:
    """The package path a ``train`` run printed (``package: PATH``)."""
    found = re.findall(r"^package: (.+)$", result.stdout, flags=re.MULTILINE)
    assert found, str(result)
    return Path(found[0].strip())
