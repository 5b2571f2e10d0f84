"""What a save package tells about itself: its description, where its analysis scripts are, how much GPU
memory analysing it needs.

Reads the package's files only (no torch, no Ray), so the center can decide at submit time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import AnalysisError
from .create import SCRIPTS_DIR

__all__ = [
    "CUDA_CONTEXT_MB",
    "SCRIPTS_DIR",
    "analyzer_memory_mb",
    "find_scripts_dir",
    "package_description",
    "peak_gpu_mb",
]

CUDA_CONTEXT_MB = 512  # what a CUDA context takes besides torch's allocations (torch does not count it)


def package_description(meta: dict[str, Any]) -> str:
    """The run's description: the latest one a run segment recorded (``continue -d`` changes it), else
    the one the package was created with (``run -d``), else ``""``."""
    for segment in reversed(meta.get("segments") or []):
        if isinstance(segment, dict) and str(segment.get("description") or "").strip():
            return str(segment["description"]).strip()
    return str(meta.get("description") or "").strip()


def find_scripts_dir(package: Path, meta: dict[str, Any], given: str | Path | None = None) -> Path:
    """The analyzer's scripts folder: ``given``; else the original project's ``AnalyzeScripts/`` (so
    scripts written after training are found); else the package's copy of it."""
    if given:
        folder = Path(given).expanduser().resolve()
        if not folder.is_dir():
            raise AnalysisError(f"the scripts folder {folder} does not exist")
        return folder
    candidates = []
    source = meta.get("source_project")
    if source:
        candidates.append(Path(str(source)) / SCRIPTS_DIR)
    candidates.append(package / SCRIPTS_DIR)
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
    raise AnalysisError(
        f"no scripts folder: none of {', '.join(map(str, candidates))} exists; pass --scripts DIR"
    )


def peak_gpu_mb(meta: dict[str, Any]) -> int | None:
    """The largest GPU memory peak (torch's reserved MB) any segment of the run recorded, or None."""
    peaks = [
        float(s["peak_gpu_mb"])
        for s in meta.get("segments") or []
        if isinstance(s, dict) and isinstance(s.get("peak_gpu_mb"), int | float) and s["peak_gpu_mb"] > 0
    ]
    return math.ceil(max(peaks)) if peaks else None


def analyzer_memory_mb(meta: dict[str, Any]) -> int | None:
    """Default GPU memory for an analyzer of this package: the training run's measured peak plus a CUDA
    context, or None (the policy's default, 90% of a GPU) when no peak was recorded."""
    peak = peak_gpu_mb(meta)
    return None if peak is None else peak + CUDA_CONTEXT_MB
