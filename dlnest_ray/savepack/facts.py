"""What a save package tells about itself: its description, where its analysis scripts are, how much GPU
memory analysing it needs.

Reads the package's files only (no torch, no Ray), so the center can decide at submit time. Each function
takes the package's :class:`~.records.Manifest` (``SavePackage.manifest``) or its metadata as a dict
(``SavePackage.meta``, which is how callers outside the save package pass it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import AnalysisError
from . import layout
from .layout import SCRIPTS_DIR
from .records import Manifest, as_manifest

__all__ = [
    "CUDA_CONTEXT_MB",
    "SCRIPTS_DIR",
    "analyzer_memory_mb",
    "find_scripts_dir",
    "package_description",
    "peak_gpu_mb",
]

log = logging.getLogger(__name__)

CUDA_CONTEXT_MB = 512  # what a CUDA context takes besides torch's allocations (torch does not count it)

Meta = Manifest | Mapping[str, Any]


def package_description(meta: Meta) -> str:
    """The run's description: the latest one a run segment recorded (``continue -d`` changes it), else
    the one the package was created with (``run -d``), else ``""``."""
    manifest = as_manifest(meta)
    for segment in reversed(manifest.segments):
        if (segment.description or "").strip():
            return (segment.description or "").strip()
    return (manifest.description or "").strip()


def find_scripts_dir(package: Path, meta: Meta, given: str | Path | None = None) -> Path:
    """The analyzer's scripts folder: ``given``; else the original project's ``AnalyzeScripts/`` (so
    scripts written after training are found); else the package's copy of it."""
    if given:
        folder = Path(given).expanduser().resolve()
        if not folder.is_dir():
            raise AnalysisError(f"the scripts folder {folder} does not exist")
        return folder
    candidates = []
    source = as_manifest(meta).source_project
    if source:
        candidates.append(layout.scripts_dir(source))
    candidates.append(layout.scripts_dir(package))
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
        log.debug("no scripts folder at %s", folder)
    raise AnalysisError(
        f"no scripts folder: none of {', '.join(map(str, candidates))} exists; pass --scripts DIR"
    )


def peak_gpu_mb(meta: Meta) -> int | None:
    """The largest GPU memory peak (torch's reserved MB) any segment of the run recorded, or None."""
    peaks = [
        float(s.peak_gpu_mb)
        for s in as_manifest(meta).segments
        if s.peak_gpu_mb is not None and s.peak_gpu_mb > 0
    ]
    return math.ceil(max(peaks)) if peaks else None


def analyzer_memory_mb(meta: Meta) -> int | None:
    """Default GPU memory for an analyzer of this package: the training run's measured peak plus a CUDA
    context, or None (the policy's default, 90% of a GPU) when no peak was recorded."""
    peak = peak_gpu_mb(meta)
    return None if peak is None else peak + CUDA_CONTEXT_MB
