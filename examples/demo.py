"""`make demo`: the DLNest quick start, end to end, through the real `dlnest-ray` commands.

new --mnist → train 2 epochs → resume for a third → analyze with AnalyzeScripts/getAcc.py.
Runs on the CPU on real MNIST (the shared data folder beside the checkout, or $DLNEST_MNIST_DIR).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dlnest_ray"]


def mnist_dir() -> Path:
    env = os.environ.get("DLNEST_MNIST_DIR")
    folder = Path(env) if env else REPO.parent / "shared" / "data" / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        sys.exit(f"demo: MNIST not found in {folder}; set DLNEST_MNIST_DIR to a folder with the IDX files")
    return folder.resolve()


def step(title: str, *args: str, cwd: Path) -> str:
    print(f"\n$ dlnest-ray {' '.join(args)}    # {title}", flush=True)
    proc = subprocess.run([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"demo: `dlnest-ray {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout


def main() -> None:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="dlnest-demo-"))
    try:
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
        out = step(
            "analyze", "analyze", package, "--script", "AnalyzeScripts/getAcc.py", "--cpu", cwd=project
        )
        acc = re.search(r"Accuracy: ([0-9.]+)", out)
        if acc is None:
            sys.exit("demo: getAcc printed no accuracy")
        print(f"\nMNIST validation accuracy after 3 epochs: {float(acc.group(1)):.2%}")
        print(f"package: {package}")
        print(f"demo finished in {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
