"""Shared helpers of the save package tests: args, packages, a reference model of the track rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnest_ray.savepack.package import SavePackage

CKPT_FILE_RE = re.compile(r"^state_(\d+)\.ckpt$")
PACKAGE_NAME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{3}$")


def ckpt_args(fast: int = 2, slow: int = 2, dilation: int = 3, consistent: int = 1) -> dict[str, int]:
    return {
        "max_ckpt_in_fast_track": fast,
        "max_ckpt_in_slow_track": slow,
        "dilation_in_slow_track": dilation,
        "max_ckpt_in_consistent_track": consistent,
    }


def plain_args(save_root: Path, **limits: int) -> dict[str, Any]:
    """Args for a standalone package without code files (``save_to_new_dir(copy_files=False)``)."""
    return {"save_root": str(save_root), "checkpoint_args": ckpt_args(**limits)}


def new_package(save_root: Path, **limits: int) -> SavePackage:
    pkg = SavePackage()
    pkg.give_args(plain_args(save_root, **limits))
    pkg.save_to_new_dir(copy_files=False)
    return pkg


def ids_on_disk(package: Path) -> set[int]:
    return {int(m[1]) for f in (package / "Checkpoints").iterdir() if (m := CKPT_FILE_RE.match(f.name))}


def temp_files(package: Path) -> list[Path]:
    return sorted((package / "Checkpoints").glob(".*.tmp-*"))


def read_manifest(package: Path) -> dict[str, Any]:
    return json.loads((package / "_package.json").read_text(encoding="utf-8"))


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (relative) with the content of files (None for folders)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


@dataclass
class RefTracks:
    """An independent, literal model of DLNest's three checkpoint tracks."""

    fast_max: int
    slow_max: int
    dilation: int
    consistent_max: int
    fast: list[int] = field(default_factory=list)
    slow: list[int] = field(default_factory=list)
    consistent: list[int] = field(default_factory=list)
    disk: set[int] = field(default_factory=set)
    next_id: int = 0

    def save(self, hold: bool) -> int:
        k = self.next_id
        self.next_id += 1
        self.disk.add(k)
        evicted: list[int] = []
        self.fast.append(k)
        while len(self.fast) > self.fast_max:
            evicted.append(self.fast.pop(0))
        if k % self.dilation == 0:
            self.slow.append(k)
            while len(self.slow) > self.slow_max:
                evicted.append(self.slow.pop(0))
        if hold:
            self.consistent.append(k)
            while len(self.consistent) > self.consistent_max:
                evicted.append(self.consistent.pop(0))
        for e in evicted:
            if e not in self.fast and e not in self.slow and e not in self.consistent:
                self.disk.discard(e)
        return k

    def held(self) -> set[int]:
        return set(self.fast) | set(self.slow) | set(self.consistent)


def run_reference(limits: tuple[int, int, int, int], holds: Iterable[bool]) -> RefTracks:
    ref = RefTracks(*limits)
    for h in holds:
        ref.save(h)
    return ref
