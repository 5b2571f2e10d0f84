"""`make demo`: dlnest-ray end to end, through the real `dlnest-ray` commands, on real MNIST.

1. Foreground (DLNest's quick start): new --mnist → train 2 epochs → resume for a third → analyze
   with AnalyzeScripts/getAcc.py.
2. The cluster: `up` (a local Ray head; two fake 16 GB GPUs when there is no real one) → two small
   runs that share one GPU and a 2-rank DDP run → `watch` one → wait → `tasks --all` → `down`.

Runs on the CPU (the shared data folder beside the checkout, or $DLNEST_MNIST_DIR). Everything it makes
— the project, its save packages, the center's state — stays in ./demo-output/ (git-ignored), so the
paths it prints can be opened afterwards; the next `make demo` replaces that folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "demo-output"
CLI = [sys.executable, "-m", "dlnest_ray"]


def mnist_dir() -> Path:
    env = os.environ.get("DLNEST_MNIST_DIR")
    folder = Path(env) if env else REPO.parent / "shared" / "data" / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        sys.exit(f"demo: MNIST not found in {folder}; set DLNEST_MNIST_DIR to a folder with the IDX files")
    return folder.resolve()


def step(title: str, *args: str, cwd: Path, env: dict[str, str] | None = None, show: bool = True) -> str:
    if show:
        print(f"\n$ dlnest-ray {' '.join(args)}    # {title}", flush=True)
    proc = subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if show:
        print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(
            f"demo: `dlnest-ray {' '.join(args)}` failed with exit code {proc.returncode}:\n{proc.stdout}"
        )
    return proc.stdout


def has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def cluster_part(project: Path, work: Path) -> None:
    env = dict(os.environ, DLNEST_RAY_HOME=str(work / "home"))
    env.pop("RAY_ADDRESS", None)
    up = ["up"]
    if not has_gpu():
        env["DLNEST_RAY_FAKE_GPUS"] = "2x16000"  # the ranks then train on the CPU
        up += ["--num-gpus", "2"]
    (project / "one_epoch.json").write_text(json.dumps({"epochs": 1}))
    step("start a local Ray cluster", *up, cwd=project, env=env)
    try:
        submit = ["run", "root_config.json", "-f", "one_epoch.json", "--json"]
        ids = []
        for extra, desc in (
            (["--memory", "6000"], "demo-a"),
            (["--memory", "6000"], "demo-b"),
            (["--ddp", "--gpus", "2", "--memory", "8000"], "demo-ddp"),
        ):
            out = step(f"queue {desc}", *submit, *extra, "--desc", desc, cwd=project, env=env)
            ids.append(json.loads(out)["task_id"])
        step(
            "the queue: two runs share GPU 0; the DDP run needs two GPUs and a CPU per rank",
            "tasks",
            cwd=project,
            env=env,
        )
        step(f"follow {ids[0]} until it ends", "watch", ids[0], cwd=project, env=env)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rows = json.loads(step("", "tasks", "--all", "--json", cwd=project, env=env, show=False))
            if all(r["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") for r in rows if r["task_id"] in ids):
                break
            time.sleep(2)
        out = step("every task with its devices and times", "tasks", "--all", cwd=project, env=env)
        rows = json.loads(step("", "tasks", "--all", "--json", cwd=project, env=env, show=False))
        for r in rows:
            if r["task_id"] in ids:
                print(f"{r['task_id']} {r['status']:9s} package {r['package']}")
        if any(r["status"] != "SUCCEEDED" for r in rows if r["task_id"] in ids):
            sys.exit("demo: a queued run did not succeed (see above)")
        package = next(r["package"] for r in rows if r["task_id"] == ids[0])
        out = step(
            "keep demo-a's model warm in an analyzer", "analyze", package, "--json", cwd=project, env=env
        )
        analyzer = json.loads(out)["task_id"]
        step(
            f"run getAcc on {analyzer} (it waits for the load)",
            "exp",
            analyzer,
            "getAcc",
            cwd=project,
            env=env,
        )
        step("again: warm, the script runs in milliseconds", "exp", "getAcc", cwd=project, env=env)
        step(f"end {analyzer}: its GPU memory is released", "del", analyzer, cwd=project, env=env)
    finally:
        step("stop the center and the local cluster", "down", "--force", cwd=project, env=env)


def main() -> None:
    started = time.perf_counter()
    work = OUTPUT
    if work.exists():
        shutil.rmtree(work)  # the last demo's output: replaced, as the README says
    work.mkdir()
    project = work / "mnist"
    step("create the project", "new", str(project), "--mnist", "--data", str(mnist_dir()), cwd=work)
    (project / "two_epochs.json").write_text(json.dumps({"epochs": 2}))
    out = step(
        "train 2 epochs",
        "train",
        "root_config.json",
        "-f",
        "two_epochs.json",
        "--cpu",
        "--desc",
        "demo",
        cwd=project,
    )
    package = re.findall(r"^package: (.+)$", out, re.M)[-1]
    step("resume for a third epoch", "train", "--resume", package, "--cpu", cwd=project)
    out = step("analyze", "analyze", package, "--script", "AnalyzeScripts/getAcc.py", "--cpu", cwd=project)
    acc = re.search(r"Accuracy: ([0-9.]+)", out)
    if acc is None:
        sys.exit("demo: getAcc printed no accuracy")
    print(f"\nMNIST validation accuracy after 3 epochs: {float(acc.group(1)):.2%}")
    print(f"package: {package}")
    cluster_part(project, work)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    print(f"everything it made is in {work} (the next `make demo` replaces it)")


if __name__ == "__main__":
    main()
