"""The steps of ``bench/gpu_check.sh``: issue 13's memory rules checked end to end on one GPU.

Called by the shell script (which installs Ray where it is missing and picks the interpreter); it uses
only the standard library, so it runs even when the install failed and can still write the summary.
Every dlnest-ray step is a real CLI call (``PYTHON -m dlnest_ray ...``) against a private local head.

Checks, in order (``$OUT/summary.txt`` has one line each: ``NAME  PASS|FAIL|SKIP|INFO  detail``):

* ``install``: the wheels went in and ``import ray, torch, dlnest_ray.cli.app`` works (the .sh decides).
* ``machine``: nvidia-smi, torch, CUDA (INFO; FAIL on a real run when torch sees no GPU).
* ``gpu_tests``: ``pytest -m gpu`` (SKIP on a dry run).
* ``up``: ``dlnest-ray up`` with a private home and Ray temp dir, then ``config --delay 2``.
* ``right_size``: three MNIST runs with default memory: each ends ``right_sized`` with
  peak <= ``mb_per_gpu`` <= ceil(peak x margin) and ``mb_per_gpu`` <= ``first_mb_per_gpu``; at least
  one (the first, launched at 90% of a GPU) is lowered.
* ``together``: at some poll of ``tasks --all --json`` the three are RUNNING at once.
* ``outgrow``: a run with an explicit small ``--memory`` whose config makes it outgrow it ends FAILED
  with ``T_000N ran out of its M MB on gpuK (peak P MB): resubmit with --memory S or more`` (S > M).
* ``others_finish``: the three default runs SUCCEEDED and none of them ran out of memory.
* ``down``: ``down --force`` exits 0 and no process of the head (its session, or naming the private
  temp dir) is left.
* ``nvidia_smi_clean``: after ``down`` ``nvidia-smi --query-compute-apps`` lists no process that was not
  there before ``up`` (SKIP on a dry run).
* ``bench_checkpoint``, ``bench_loop_overhead``: ``bench/checkpoint.py`` and ``bench/loop_overhead.py``
  with ``--device cuda`` (a GPU-resident state; both loops on the GPU) exit 0; their device line and
  result lines are copied.

Dry run (``--dry-run``): CPU only, ``DLNEST_RAY_FAKE_GPUS=1x16000``, runs "allocate" ``fake_gpu_mb``
(3000 for the default runs; [1000, 2500] by epoch for the outgrowing one, under ``--memory 2000``),
MNIST cut to a small subset, benchmarks with one repeat on that subset and ``--device cpu``.

``$OUT`` gets at most 8 plain files (what a device machine hands back): summary.txt, machine.txt,
steps.log, tasks.jsonl, pytest_gpu.log, bench.log, logs.tar.gz (+ install.log from the .sh).

Knobs (environment): GPU_CHECK_EPOCHS (epochs of the default runs; dry 4, GPU 15), GPU_CHECK_BATCH
(their batch size on a GPU; 32), GPU_CHECK_IMAGES (training images, 0 = the template's 8,000; dry 768),
GPU_CHECK_OUTGROW_MB (dry 2000, GPU 1500), GPU_CHECK_OUTGROW_JSON (the outgrowing run's freq config),
GPU_CHECK_E2E_TIMEOUT (seconds for the runs; dry 420, GPU 360), GPU_CHECK_BENCH_REPEATS,
GPU_CHECK_BENCH_TIMEOUT, GPU_CHECK_PYTEST_TIMEOUT.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STATUSES = ("PASS", "FAIL", "SKIP", "INFO")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
FAKE_GPUS = "1x16000"
FAKE_MB = 3000  # what each default dry run "allocates"; its peak is this + 300 (fake CUDA context)
OUTGROW_RE = re.compile(
    r"(?P<task>T_\d+) ran out of its (?P<mb>\d+) MB on gpu(?P<gpu>\d+) \(peak (?P<peak>\d+) MB\): "
    r"resubmit with --memory (?P<suggest>\d+) or more"
)
MNIST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ------------------------------------------------------------------------------------------- report
@dataclass
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Report:
    """The checks so far; ``write`` (re)writes ``summary.txt`` so a killed run still leaves one."""

    out: Path
    title: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.checks.append(Check(name, status, " ".join(detail.split())))
        print(f"gpu_check: {name:<20} {status}  {detail}", flush=True)
        self.write()

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "FAIL"]

    def write(self, final: bool = False) -> None:
        lines = [self.title, ""]
        lines += [f"{c.name:<20} {c.status:<4}  {c.detail}".rstrip() for c in self.checks]
        if final:
            counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
            verdict = "FAIL" if counts["FAIL"] else "PASS"
            lines += [
                "",
                f"RESULT: {verdict} ({counts['PASS']} passed, {counts['FAIL']} failed, "
                f"{counts['SKIP']} skipped)"
                + (f"; failed: {', '.join(self.failed())}" if self.failed() else ""),
            ]
        (self.out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ commands
@dataclass
class Result:
    rc: int
    out: str
    seconds: float


class Shell:
    """Runs commands, appending each (command, output, exit status, time) to ``steps.log``."""

    def __init__(self, log: Path, env: Mapping[str, str]) -> None:
        self.log = log
        self.env = dict(env)

    def __call__(
        self,
        cmd: Sequence[object],
        *,
        cwd: Path = REPO,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        quiet: bool = False,
        log: Path | None = None,
    ) -> Result:
        args = [str(c) for c in cmd]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env={**self.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                timeout=timeout,
            )
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            raw = exc.output or ""
            rc, out = 124, (raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
            out += f"\n[gpu_check: timed out after {timeout:.0f} s]\n"
        except OSError as exc:
            rc, out = 127, f"[gpu_check: cannot run {args[0]}: {exc}]\n"
        took = time.monotonic() - t0
        with open(log or self.log, "a", encoding="utf-8") as f:
            f.write(f"\n$ {' '.join(args)}    # cwd {cwd}\n")
            if not quiet or rc != 0:
                f.write(out if out.endswith("\n") or not out else out + "\n")
            f.write(f"[exit {rc} after {took:.1f} s]\n")
        return Result(rc, out, took)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# --------------------------------------------------------------------------------------------- MNIST
def find_mnist(candidates: Sequence[Path]) -> Path | None:
    """The first folder holding both t10k IDX files (plain or .gz)."""
    for folder in candidates:
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in MNIST_FILES):
            return folder.resolve()
    return None


def mnist_candidates(environ: Mapping[str, str]) -> list[Path]:
    found = [Path(environ["DLNEST_MNIST_DIR"])] if environ.get("DLNEST_MNIST_DIR") else []
    return [
        *found,
        REPO.parent / "shared" / "data" / "mnist",  # beside the checkout (the developers' machines)
        REPO / "shared" / "data" / "mnist",  # inside it (what travels to a device machine)
        REPO / ".whl" / "mnist",  # beside the carried wheels (ignored by git, carried with them)
    ]


def _read_idx(folder: Path, name: str) -> tuple[bytes, bytes]:
    """(header, body) of an IDX file, ``name`` or ``name.gz``."""
    plain = folder / name
    data = plain.read_bytes() if plain.is_file() else gzip.decompress((folder / f"{name}.gz").read_bytes())
    ndim = data[3]
    head = 4 + 4 * ndim
    return data[:head], data[head:]


def _write_idx(path: Path, header: bytes, body: bytes, count: int) -> None:
    header = header[:4] + struct.pack(">I", count) + header[8:]
    path.write_bytes(gzip.compress(header + body, compresslevel=1))


def make_subset(source: Path, dest: Path, n_train: int, n_val: int) -> Path:
    """A folder with ``train-*`` (the first ``n_train`` t10k images) and ``t10k-*`` (the last ``n_val``)
    IDX files: the MNIST template then trains on the former and validates on the latter."""
    dest.mkdir(parents=True, exist_ok=True)
    img_head, img = _read_idx(source, MNIST_FILES[0])
    lab_head, lab = _read_idx(source, MNIST_FILES[1])
    rows, cols = struct.unpack(">II", img_head[8:16])
    size = rows * cols
    total = len(lab)
    if n_train + n_val > total:
        raise ValueError(f"asked for {n_train} + {n_val} images, the folder has {total}")
    _write_idx(dest / "train-images-idx3-ubyte.gz", img_head, img[: n_train * size], n_train)
    _write_idx(dest / "train-labels-idx1-ubyte.gz", lab_head, lab[:n_train], n_train)
    _write_idx(dest / "t10k-images-idx3-ubyte.gz", img_head, img[(total - n_val) * size :], n_val)
    _write_idx(dest / "t10k-labels-idx1-ubyte.gz", lab_head, lab[total - n_val :], n_val)
    return dest


# -------------------------------------------------------------------------------------------- checks
def right_size_problems(row: Mapping[str, Any], margin: float) -> list[str]:
    """Why a default-memory run's final row does not show a right-sized reservation (empty: it does)."""
    tid = row.get("task_id", "?")
    problems = []
    if not row.get("memory_auto"):
        problems.append(f"{tid} is not memory_auto")
    if not row.get("right_sized"):
        problems.append(f"{tid} has right_sized false")
    peak, mb, first = (
        row.get("peak_mb"),
        int(row.get("mb_per_gpu") or 0),
        int(row.get("first_mb_per_gpu") or 0),
    )
    if not isinstance(peak, int) or peak <= 0:
        problems.append(f"{tid} has no measured peak ({peak!r})")
    elif not peak <= mb <= math.ceil(peak * margin):
        problems.append(
            f"{tid} holds {mb} MB, not within [peak {peak}, peak x {margin} = {math.ceil(peak * margin)}]"
        )
    if first and mb > first:
        problems.append(f"{tid} went up from {first} to {mb} MB")
    return problems


def right_size_text(row: Mapping[str, Any]) -> str:
    return (
        f"{row.get('task_id')} auto {row.get('first_mb_per_gpu')} -> {row.get('mb_per_gpu')} MB "
        f"(peak {row.get('peak_mb')} MB; {row.get('memory_source') or 'no source'})"
    )


def outgrow_problems(row: Mapping[str, Any], memory_mb: int) -> tuple[list[str], str]:
    """Why the outgrowing run's final row is not the expected failure, and the line it failed with."""
    tid = row.get("task_id", "?")
    text = "\n".join([str(row.get("error") or ""), *map(str, row.get("output_tail") or ())])
    m = OUTGROW_RE.search(text)
    line = m.group(0) if m else last_line(str(row.get("error") or "")) if row.get("error") else "(no error)"
    problems = []
    if row.get("status") != "FAILED":
        problems.append(f"{tid} ended {row.get('status')}, not FAILED")
    if m is None:
        problems.append(f"{tid}'s error has no 'ran out of its ... MB' line")
    else:
        if m["task"] != tid:
            problems.append(f"the line names {m['task']}, not {tid}")
        if int(m["mb"]) != memory_mb:
            problems.append(f"the line says {m['mb']} MB, the run had --memory {memory_mb}")
        if int(m["suggest"]) <= memory_mb:
            problems.append(f"the suggestion {m['suggest']} MB is not above the {memory_mb} MB that failed")
    return problems, line


def overlap_s(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Seconds during which the ranks of every run in ``rows`` ran at once, from the recorded times
    (``running_at``, else ``started_at``, to ``ended_at``); None when a time is missing."""
    starts = [r.get("running_at") or r.get("started_at") for r in rows]
    ends = [r.get("ended_at") for r in rows]
    times = [*starts, *ends]
    if not rows or not all(isinstance(t, (int, float)) for t in times):
        return None
    return min(float(t) for t in ends if t is not None) - max(float(t) for t in starts if t is not None)


def all_running(rows: Sequence[Mapping[str, Any]], ids: Sequence[str]) -> bool:
    status = {r.get("task_id"): r.get("status") for r in rows}
    return all(status.get(t) == "RUNNING" for t in ids)


def compute_apps(shell: Shell) -> list[str] | None:
    """``nvidia-smi --query-compute-apps`` rows (pid, name, MB); None when nvidia-smi fails."""
    res = shell(
        ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
        timeout=60,
    )
    if res.rc != 0:
        return None
    return [ln.strip() for ln in res.out.splitlines() if ln.strip() and "No running" not in ln]


def new_gpu_processes(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """Rows of ``after`` (``pid, name, MB``) whose pid was not in ``before``."""
    old = {row.split(",")[0].strip() for row in before}
    return [row for row in after if row.split(",")[0].strip() not in old]


def gpu_test_files(tests: Path) -> list[str]:
    """The test files (relative to the repo) that mark tests with ``gpu``."""
    mark = re.compile(r"\bmark\.gpu\b")
    return sorted(
        str(p.relative_to(tests.parent))
        for p in tests.rglob("test_*.py")
        if mark.search(p.read_text(encoding="utf-8", errors="replace"))
    )


def stray_pids(sid: int, marker: str) -> list[int]:
    """Live processes in session ``sid`` or whose command line names ``marker`` (the private dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            if state == "Z":
                continue
            if (sid > 1 and os.getsid(pid) == sid) or (marker and marker in cmdline):
                found.append(pid)
    return found


# --------------------------------------------------------------------------------------------- steps
@dataclass
class Ctx:
    opts: argparse.Namespace
    out: Path
    report: Report
    shell: Shell
    python: str
    dry: bool
    mnist: Path | None


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


PROBE = """
import json, platform, sys
d = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
try:
    import torch
    d["torch"], d["cuda"], d["torch_cuda"] = torch.__version__, torch.cuda.is_available(), torch.version.cuda
    if d["cuda"]:
        p = torch.cuda.get_device_properties(0)
        d["gpu"], d["gpu_mb"], d["gpus"] = p.name, p.total_memory // 2**20, torch.cuda.device_count()
except Exception as e:
    d["torch_error"] = repr(e)
for name in ("ray", "dlnest_ray"):
    try:
        mod = __import__(name)
        d[name] = getattr(mod, "__version__", mod.__file__)
    except Exception as e:
        d[name + "_error"] = repr(e)
print(json.dumps(d))
"""


def step_machine(ctx: Ctx) -> bool:
    """machine.txt; returns whether torch sees a CUDA GPU."""
    facts = ctx.out / "machine.txt"
    facts.write_text(
        f"gpu_check {'dry run' if ctx.dry else 'GPU run'} at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
    )
    commands: list[list[str]] = [
        ["uname", "-a"],
        ["nproc"],
        ["nvidia-smi"],
        ["nvidia-smi", "-L"],
        [ctx.python, "-c", PROBE],
        ["git", "-C", str(REPO), "log", "-1", "--format=%H %s"],
        ["git", "-C", str(REPO), "status", "--short"],
    ]
    info: dict[str, Any] = {}
    for cmd in commands:
        res = ctx.shell(cmd, timeout=60, log=facts)
        if cmd[0] == ctx.python and res.rc == 0:
            with contextlib.suppress(ValueError):
                info = json.loads(last_line(res.out))
    cuda = bool(info.get("cuda"))
    gpu = f"{info.get('gpu')} ({info.get('gpu_mb')} MB)" if cuda else "none"
    detail = (
        f"python {info.get('python', '?')}, torch {info.get('torch', info.get('torch_error', '?'))} "
        f"(CUDA {info.get('torch_cuda')}), CUDA available: {cuda}, GPU: {gpu}, "
        f"ray {info.get('ray', info.get('ray_error', '?'))}; details in machine.txt"
    )
    if ctx.dry:
        ctx.report.add("machine", "INFO", detail)
    else:
        ctx.report.add(
            "machine", "INFO" if cuda else "FAIL", detail if cuda else f"torch sees no CUDA GPU: {detail}"
        )
    return cuda


def step_gpu_tests(ctx: Ctx) -> None:
    if ctx.dry:
        ctx.report.add("gpu_tests", "SKIP", "dry run: no CUDA GPU (`pytest -m gpu` needs one)")
        return
    log = ctx.out / "pytest_gpu.log"
    env = {"DLNEST_MNIST_DIR": str(ctx.mnist)} if ctx.mnist else {}
    files = gpu_test_files(REPO / "tests")
    if not files:
        ctx.report.add("gpu_tests", "FAIL", "no test file under tests/ has a `gpu` mark")
        return
    # Only the files with gpu tests: collecting the whole suite would import what the GPU machine may
    # lack for other tests (the shell's prompt_toolkit, say) and fail for reasons unrelated to the GPU.
    res = ctx.shell(
        [
            ctx.python,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=-ra",
            *files,
        ],
        timeout=env_int("GPU_CHECK_PYTEST_TIMEOUT", 300),
        env=env,
        log=log,
    )
    summary = last_line(res.out)
    passed = int(m[1]) if (m := re.search(r"(\d+) passed", summary)) else 0
    if res.rc == 0 and passed > 0:  # a skip shows in the line (e.g. NVML cannot see processes here)
        ctx.report.add("gpu_tests", "PASS", summary)
    else:
        ctx.report.add("gpu_tests", "FAIL", f"exit {res.rc}: {summary} (see pytest_gpu.log)")


def cli(ctx: Ctx, *args: object, cwd: Path = REPO, timeout: float = 120, quiet: bool = False) -> Result:
    return ctx.shell([ctx.python, "-m", "dlnest_ray", *args], cwd=cwd, timeout=timeout, quiet=quiet)


def step_end_to_end(ctx: Ctx) -> None:
    work = Path(tempfile.mkdtemp(prefix="dlr-gc-", dir="/tmp"))  # short: Ray's socket paths live under it
    home = work / "home"
    env_changes: dict[str, str] = {
        "DLNEST_RAY_HOME": str(home),
        "RAY_TMPDIR": str(work),
        "DLNEST_RAY_CANCEL_GRACE_S": "3",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("RAY_ADDRESS", "DLNEST_RAY_FAKE_GPUS"):
        ctx.shell.env.pop(name, None)
    if ctx.dry:
        env_changes |= {
            "DLNEST_RAY_FAKE_GPUS": FAKE_GPUS,
            "DLNEST_RAY_CPUS_PER_RANK": "0.25",  # 4 runs at once on a 2-core machine
            "OMP_NUM_THREADS": "1",
        }
    ctx.shell.env.update(env_changes)
    sid = 0
    before_apps = None if ctx.dry else compute_apps(ctx.shell)
    seen_apps: list[str] | None = None
    e2e_names = ("right_size", "together", "outgrow", "others_finish")
    try:
        if ctx.mnist is None:
            for name in ("up", *e2e_names):
                ctx.report.add(name, "FAIL", "not run: no MNIST folder (set DLNEST_MNIST_DIR)")
            return
        up = cli(ctx, "up", "--home", home, "--port", free_port(), "--dashboard-port", "0", timeout=300)
        with contextlib.suppress(OSError, ValueError):
            sid = int(json.loads((home / "head.json").read_text())["session_id"])
        delay = cli(ctx, "config", "--delay", "2")
        if up.rc != 0 or delay.rc != 0:
            bad = up if up.rc != 0 else delay
            ctx.report.add("up", "FAIL", f"exit {bad.rc}: {last_line(bad.out)}")
            for name in e2e_names:
                ctx.report.add(name, "FAIL", "not run: up failed")
            return
        gpus = re.findall(r":gpu\d+.*", up.out)
        ctx.report.add("up", "PASS", f"head in {work}; {'; '.join(g.strip() for g in gpus) or 'no GPU line'}")
        seen_apps = run_scenario(ctx, work)
    finally:
        cli(ctx, "tasks", "--all", timeout=120)
        cli(ctx, "devices", timeout=120)
        cli(ctx, "log", timeout=120)
        down = cli(ctx, "down", "--force", "--wait", "120", timeout=300)
        time.sleep(2)
        left = stray_pids(sid, str(work))
        for pid in left:  # the head's own processes, started by this script: never anything else
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if down.rc == 0 and not left:
            ctx.report.add(
                "down", "PASS", f"down --force exit 0 ({down.seconds:.0f} s); no process of the head left"
            )
        else:
            ctx.report.add(
                "down",
                "FAIL",
                f"down --force exit {down.rc}: {last_line(down.out)}; processes left (killed): {left}",
            )
        step_nvidia_smi(ctx, before_apps, seen_apps)
        pack_logs(ctx, work)
        if ctx.opts.keep:
            print(f"gpu_check: kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_scenario(ctx: Ctx, work: Path) -> list[str] | None:
    """The MNIST runs; adds right_size, together, outgrow, others_finish. Returns what nvidia-smi listed
    while the runs were together (GPU run), else None."""
    dry = ctx.dry
    project = work / "mnist"
    data = ctx.mnist
    assert data is not None
    n_train = env_int("GPU_CHECK_IMAGES", 768 if dry else 0)
    if n_train > 0:
        data = make_subset(data, work / "data", n_train, min(256, max(64, n_train // 4)))
    new = cli(ctx, "new", project, "--mnist", "--data", data, cwd=work)
    if new.rc != 0:
        for name in ("right_size", "together", "outgrow", "others_finish"):
            ctx.report.add(name, "FAIL", f"not run: `new --mnist` failed: {last_line(new.out)}")
        return None
    epochs = env_int("GPU_CHECK_EPOCHS", 4 if dry else 15)
    auto_cfg: dict[str, Any] = {"epochs": epochs}
    if dry:
        auto_cfg["fake_gpu_mb"] = FAKE_MB
    else:  # an MNIST epoch takes about a second on a GPU: smaller batches and more epochs, so the later
        # two runs' ranks have started (Ray worker, CUDA init) while the first one still trains
        auto_cfg["dataset_config"] = {"batch_size": env_int("GPU_CHECK_BATCH", 32)}
    outgrow_mb = env_int("GPU_CHECK_OUTGROW_MB", 2000 if dry else 1500)
    if os.environ.get("GPU_CHECK_OUTGROW_JSON"):
        outgrow_cfg = json.loads(os.environ["GPU_CHECK_OUTGROW_JSON"])
    elif dry:
        outgrow_cfg = {"epochs": 2, "fake_gpu_mb": [1000, 2500]}  # 1300 MB, then 2800 MB > 2000
    else:
        # Trains like the others (batch 64 stays far under the cap), then validation in batches of 2,000
        # through a 4x wider network needs well over a GB: it outgrows its share partway through.
        outgrow_cfg = {
            "epochs": 2,
            "model_config": {"channels": [64, 128]},
            "dataset_config": {"val_batch_size": 2000},
        }
    (project / "gc_auto.json").write_text(json.dumps(auto_cfg))
    (project / "gc_outgrow.json").write_text(json.dumps(outgrow_cfg))

    auto_ids: list[str] = []
    for i in range(3):
        res = cli(
            ctx,
            "run",
            "root_config.json",
            "-f",
            "gc_auto.json",
            "--desc",
            f"gc-auto-{i}",
            "--json",
            cwd=project,
        )
        if res.rc == 0:
            with contextlib.suppress(ValueError, KeyError):
                auto_ids.append(json.loads(res.out)["task_id"])
    res = cli(
        ctx,
        "run",
        "root_config.json",
        "-f",
        "gc_outgrow.json",
        "--memory",
        outgrow_mb,
        "--retries",  # retried, it would be given more memory and succeed: the check is that it fails alone
        "0",
        "--desc",
        "gc-outgrow",
        "--json",
        cwd=project,
    )
    outgrow_id = ""
    if res.rc == 0:
        with contextlib.suppress(ValueError, KeyError):
            outgrow_id = json.loads(res.out)["task_id"]
    if len(auto_ids) != 3 or not outgrow_id:
        for name in ("right_size", "together", "outgrow", "others_finish"):
            ctx.report.add(name, "FAIL", f"not run: `run` failed: {last_line(res.out)}")
        return None
    ids = [*auto_ids, outgrow_id]

    margin = 1.15
    cfg = cli(ctx, "config", "--json")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        margin = float(json.loads(cfg.out)["margin"])

    timeout = env_int("GPU_CHECK_E2E_TIMEOUT", 420 if dry else 360)
    t0 = time.monotonic()
    deadline = t0 + timeout
    together_at: float | None = None
    seen_apps: list[str] | None = None
    rows: list[dict[str, Any]] = []
    with open(ctx.out / "tasks.jsonl", "a", encoding="utf-8") as snaps:
        while time.monotonic() < deadline:
            res = cli(ctx, "tasks", "--all", "--json", timeout=120, quiet=True)
            if res.rc == 0:
                with contextlib.suppress(ValueError):
                    rows = [r for r in json.loads(res.out) if r.get("task_id") in ids]
                    snaps.write(json.dumps({"t": round(time.monotonic() - t0, 1), "rows": rows}) + "\n")
                    snaps.flush()
            if together_at is None and rows and all_running(rows, auto_ids):
                together_at = time.monotonic() - t0
                if not dry:
                    seen_apps = compute_apps(ctx.shell)
            if rows and all(r.get("status") in TERMINAL for r in rows) and len(rows) == len(ids):
                break
            time.sleep(1)
    final = {r["task_id"]: r for r in rows}
    ended = all(final.get(t, {}).get("status") in TERMINAL for t in ids)
    late = "" if ended else f" (runs still not ended after {timeout} s)"

    problems = [p for t in auto_ids for p in right_size_problems(final.get(t, {"task_id": t}), margin)]
    lowered = [
        t
        for t in auto_ids
        if int(final.get(t, {}).get("mb_per_gpu") or 0) < int(final.get(t, {}).get("first_mb_per_gpu") or 0)
    ]
    if not lowered:
        problems.append("no default run had its reservation lowered below its first one")
    texts = "; ".join(right_size_text(final.get(t, {"task_id": t})) for t in auto_ids)
    ctx.report.add(
        "right_size",
        "FAIL" if problems else "PASS",
        ("; ".join(problems) + " | " if problems else "") + texts,
    )

    overlap = overlap_s([final.get(t, {}) for t in auto_ids])
    polled = (
        f"a poll saw all three RUNNING {together_at:.0f} s after submitting"
        if together_at
        else "no poll caught it"
    )
    if overlap is not None and overlap > 0:
        ctx.report.add(
            "together",
            "PASS",
            f"{', '.join(auto_ids)} ran together for {overlap:.0f} s (recorded times); {polled}",
        )
    elif together_at is not None:
        ctx.report.add("together", "PASS", f"{', '.join(auto_ids)}: {polled}")
    else:
        ctx.report.add("together", "FAIL", f"{', '.join(auto_ids)} never ran at one time ({polled}){late}")

    og_problems, line = outgrow_problems(final.get(outgrow_id, {"task_id": outgrow_id}), outgrow_mb)
    ctx.report.add(
        "outgrow",
        "FAIL" if og_problems else "PASS",
        ("; ".join(og_problems) + " | " if og_problems else "")
        + f"{outgrow_id} (--memory {outgrow_mb}): {line}{late}",
    )

    bad = [
        f"{t} {final.get(t, {}).get('status', 'missing')}"
        for t in auto_ids
        if final.get(t, {}).get("status") != "SUCCEEDED"
    ]
    oom = [t for t in auto_ids if "ran out of" in str(final.get(t, {}).get("error") or "")]
    if bad or oom:
        ctx.report.add("others_finish", "FAIL", f"not SUCCEEDED: {bad}; ran out of memory: {oom}{late}")
    else:
        ctx.report.add(
            "others_finish", "PASS", f"{', '.join(auto_ids)} SUCCEEDED while {outgrow_id} failed alone"
        )
    return seen_apps


def step_nvidia_smi(ctx: Ctx, before: list[str] | None, during: list[str] | None) -> None:
    if ctx.dry:
        ctx.report.add("nvidia_smi_clean", "SKIP", "dry run: no real GPU, nothing for nvidia-smi to list")
        return
    after = compute_apps(ctx.shell)
    if after is None:
        ctx.report.add("nvidia_smi_clean", "FAIL", "nvidia-smi --query-compute-apps failed")
        return
    new = new_gpu_processes(before or [], after)
    if during is None:
        seen = " (nvidia-smi was not read while the runs were together)"
    elif not during:
        seen = " (vacuous: nvidia-smi listed no compute process even while the runs were on the GPU)"
    else:
        seen = f"; while the runs were together it listed {during}"
    if new:
        ctx.report.add("nvidia_smi_clean", "FAIL", f"after down nvidia-smi lists: {new}{seen}")
    else:
        ctx.report.add(
            "nvidia_smi_clean", "PASS", f"after down nvidia-smi lists no new compute process{seen}"
        )


def pack_logs(ctx: Ctx, work: Path) -> None:
    """The home's files, the packages' small files and Ray's logs into logs.tar.gz (files under 2 MB)."""
    budget = [40 * 2**20]

    def small(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.isdir():
            return info
        if not info.isfile() or info.size > 2 * 2**20 or info.size > budget[0]:
            return None
        if info.name.endswith((".sock", ".ckpt", ".pt", ".pth")) or "/sockets/" in info.name:
            return None
        budget[0] -= info.size
        return info

    with tarfile.open(ctx.out / "logs.tar.gz", "w:gz") as tar:
        for sub in ("home", "mnist"):
            if (work / sub).exists():
                with contextlib.suppress(OSError):
                    tar.add(work / sub, arcname=sub, filter=small)
        for session in sorted(work.glob("ray/session_*/logs")):
            with contextlib.suppress(OSError):
                tar.add(session, arcname=f"ray/{session.parent.name}/logs", filter=small)


def step_benchmarks(ctx: Ctx) -> None:
    log = ctx.out / "bench.log"
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    for name in ("DLNEST_RAY_FAKE_GPUS", "RAY_ADDRESS"):
        ctx.shell.env.pop(name, None)
    if ctx.mnist is not None:
        env["DLNEST_MNIST_DIR"] = str(ctx.mnist)
    subset_dir: Path | None = None
    if ctx.dry and ctx.mnist is not None:
        subset_dir = Path(tempfile.mkdtemp(prefix="dlr-gc-bench-"))
        env["DLNEST_MNIST_DIR"] = str(make_subset(ctx.mnist, subset_dir, 512, 128))
    try:
        for name, script, repeats in (
            ("bench_checkpoint", "checkpoint.py", 1 if ctx.dry else 5),
            ("bench_loop_overhead", "loop_overhead.py", 1 if ctx.dry else 3),
        ):
            repeats = env_int("GPU_CHECK_BENCH_REPEATS", repeats)
            # A real run measures with the state and both loops on the GPU; a dry run on the CPU.
            device = "cpu" if ctx.dry else "cuda"
            path = REPO / "bench" / script
            args: list[object] = [ctx.python, path, "--repeats", repeats, "--device", device]
            res = ctx.shell(args, timeout=env_int("GPU_CHECK_BENCH_TIMEOUT", 300), env=env, log=log)
            # the result lines (ratios), not the per-run lines of loop_overhead.py
            results = [ln.strip() for ln in res.out.splitlines() if "ratio" in ln and "run " not in ln[:6]]
            header = [ln.strip() for ln in res.out.splitlines() if ln.startswith(f"{script}: device ")][:1]
            status = "PASS" if res.rc == 0 and results else "FAIL"
            ctx.report.add(
                name,
                status,
                f"[{'GPU' if device == 'cuda' else 'CPU'}, repeats {repeats}"
                f"{', small MNIST subset' if ctx.dry else ''}] "
                + (" || ".join(header + results) if results else f"exit {res.rc}: {last_line(res.out)}"),
            )
    finally:
        if subset_dir is not None:
            shutil.rmtree(subset_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- main
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the folder everything goes to")
    ap.add_argument("--dry-run", action="store_true", help="CPU with fake GPUs (no real GPU needed)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter with torch, ray and dlnest_ray")
    ap.add_argument("--install", choices=STATUSES, default="SKIP", help="the install step's result")
    ap.add_argument("--install-note", default="", help="its detail")
    ap.add_argument("--keep", action="store_true", help="keep the private work folder under /tmp")
    ap.add_argument("--skip-bench", action="store_true", help="leave the benchmarks out (SKIP)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, steps: Sequence[Callable[[Ctx], Any]] | None = None) -> int:
    opts = parse(argv)
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    dry = bool(opts.dry_run)
    title = (
        f"gpu_check {f'DRY RUN on the CPU (DLNEST_RAY_FAKE_GPUS={FAKE_GPUS})' if dry else 'on a real GPU'}"
        f" -- {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
    )
    report = Report(out, title)
    shell = Shell(out / "steps.log", {k: v for k, v in os.environ.items()})
    ctx = Ctx(opts, out, report, shell, opts.python, dry, find_mnist(mnist_candidates(os.environ)))
    report.add(
        "install", opts.install, opts.install_note or ("dry run: the current environment" if dry else "")
    )
    if opts.install == "FAIL":
        report.write(final=True)
        return 1
    for step in steps if steps is not None else _default_steps(opts):
        try:
            step(ctx)
        except Exception as exc:  # one broken step must not hide the others' results
            report.add(getattr(step, "__name__", "step"), "FAIL", f"crashed: {type(exc).__name__}: {exc}")
    report.write(final=True)
    return 1 if report.failed() else 0


def _default_steps(opts: argparse.Namespace) -> list[Callable[[Ctx], Any]]:
    steps: list[Callable[[Ctx], Any]] = [step_machine, step_gpu_tests, step_end_to_end]
    if opts.skip_bench:
        steps.append(lambda ctx: ctx.report.add("bench", "SKIP", "--skip-bench"))
    else:
        steps.append(step_benchmarks)
    return steps


if __name__ == "__main__":
    sys.exit(main())
