"""``compare``'s memory (issue 13): reserved → measured per package from its segments (``reserved_mb``,
``peak_gpu_mb``), and the ``gpu_peak_mb`` metrics column summarised like any other metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dlnest_ray.savepack.compare import MetricsData, RunData, memory_text, segment_reserved_mb, summarize_run
from dlnest_ray.savepack.records import Segment


def run(segments: list[dict[str, Any]], rows: list[dict[str, Any]] | None = None) -> RunData:
    metrics = None
    if rows is not None:
        metrics = MetricsData(columns=list(dict.fromkeys(k for r in rows for k in r)), rows=rows)
    return RunData(path=Path("/p/run"), args={}, meta={"segments": segments}, metrics=metrics)


@pytest.mark.parametrize(
    ("segment", "mb"),
    [
        ({"reserved_mb": 6000}, 6000),
        ({"reserved_mb": 6000.2}, 6001),  # whole MB, rounded up like the peak
        ({}, None),  # not recorded (foreground train, older packages)
        ({"reserved_mb": None}, None),
        ({"reserved_mb": 0}, None),
        ({"reserved_mb": -5}, None),
        ({"reserved_mb": True}, None),
        ({"reserved_mb": "6000"}, None),
        ({"reserved_mb": float("nan")}, None),
    ],
)
def test_segment_reserved_mb_reads_the_key_and_tolerates_anything_else(
    segment: dict[str, Any], mb: int | None
) -> None:
    # read by name whether Segment knows the key or keeps it among its unknown ones (``extra``)
    assert segment_reserved_mb(Segment.from_json(segment)) == mb


@pytest.mark.parametrize(
    ("reserved", "peak", "text"),
    [(6000, 4210, "6000 → 4210"), (None, 4210, "→ 4210"), (6000, None, "6000 → -"), (None, None, "-")],
)
def test_memory_text(reserved: int | None, peak: int | None, text: str) -> None:
    assert memory_text(reserved, peak) == text


def test_summary_takes_the_largest_reservation_and_peak_over_segments() -> None:
    segments = [
        {"started": 1.0, "ended": 2.0, "status": "interrupted", "reserved_mb": 14400, "peak_gpu_mb": 4170},
        {"started": 3.0, "ended": 4.0, "status": "succeeded", "reserved_mb": 4800, "peak_gpu_mb": 4210},
    ]
    s = summarize_run(run(segments))
    assert (s.reserved_mb, s.peak_gpu_mb) == (14400, 4210)
    assert memory_text(s.reserved_mb, s.peak_gpu_mb) == "14400 → 4210"


def test_summary_without_memory_records() -> None:
    s = summarize_run(run([{"started": 1.0, "ended": 2.0, "status": "succeeded", "devices": ["cpu"]}]))
    assert (s.reserved_mb, s.peak_gpu_mb) == (None, None)
    assert memory_text(s.reserved_mb, s.peak_gpu_mb) == "-"


def test_gpu_peak_mb_column_is_a_metric_like_the_others() -> None:
    rows = [
        {"epoch": 0, "step": 10, "wall_time": 1.0, "loss": 1.0, "gpu_peak_mb": 4100},
        {"epoch": 1, "step": 20, "wall_time": 2.0, "loss": 0.5, "gpu_peak_mb": 4210},
        {"epoch": 2, "step": 30, "wall_time": 3.0, "loss": 0.4, "gpu_peak_mb": None},  # not measured
    ]
    data = run([], rows).metrics
    assert data is not None and data.metric_names == ["loss", "gpu_peak_mb"]
    peak = summarize_run(run([], rows)).metrics["gpu_peak_mb"]
    assert (peak.final, peak.best, peak.best_epoch) == (4210.0, 4100.0, 0)
