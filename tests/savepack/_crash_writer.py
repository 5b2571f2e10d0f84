"""Subprocess for the crash tests: save checkpoint 0, then start a big checkpoint 1 and get killed.

Usage: python _crash_writer.py PACKAGE MARKER MODE

MODE ``mid``: checkpoint 1's file is being written (some MB in its temp file) when MARKER appears, and
the write then stalls so that the parent's SIGKILL surely lands mid-write.
MODE ``after_file``: checkpoint 1's file is complete and durable but the manifest not yet updated when
MARKER appears.
MODE ``race``: MARKER appears just before checkpoint 1 starts; nothing stalls.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

import dlnest_ray.atomic as atomic_mod
import dlnest_ray.savepack.package as package_mod
from dlnest_ray.savepack.package import SavePackage

BIG_NUMEL = 50_000_000  # 200 MB of float32
STALL_AFTER = 8 << 20


def signal_ready(marker: Path) -> None:
    tmp = marker.with_name(marker.name + ".part")
    tmp.write_text("ready")
    tmp.rename(marker)


def main(package: str, marker_path: str, mode: str) -> None:
    marker = Path(marker_path)
    pkg = SavePackage.open(package)
    assert pkg.save_checkpoint({"id": 0, "w": torch.arange(10)}) == 0

    if mode == "mid":
        real_write = atomic_mod.HashingWriter.write

        def stalling_write(self: Any, data: Any) -> int:
            view = memoryview(data).cast("B")
            if self.bytes + view.nbytes >= STALL_AFTER and not marker.exists():
                # torch hands the tensor's bytes over in one call: write only part of it, then stall
                real_write(self, view[: max(0, STALL_AFTER - self.bytes)])
                self.flush()
                signal_ready(marker)
                time.sleep(600)
            return real_write(self, data)

        atomic_mod.HashingWriter.write = stalling_write  # type: ignore[method-assign]
    elif mode == "after_file":
        real_write_file = package_mod.write_file

        def write_then_stall(path: Path, state: Any) -> tuple[int, str]:
            result = real_write_file(path, state)
            signal_ready(marker)
            time.sleep(600)
            return result

        package_mod.write_file = write_then_stall  # type: ignore[assignment]
    elif mode == "race":
        signal_ready(marker)
    else:
        raise SystemExit(f"unknown mode {mode}")

    pkg.save_checkpoint({"id": 1, "big": torch.ones(BIG_NUMEL)})
    time.sleep(600)  # only "race" gets here; the parent kills it


if __name__ == "__main__":
    main(*sys.argv[1:4])
