"""savepack.records: typed manifest records that read DLNest's and newer manifests and lose nothing."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from dlnest_ray.errors import PackageError
from dlnest_ray.savepack.facts import package_description, peak_gpu_mb
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.savepack.records import (
    MANIFEST_VERSION,
    TRACK_KEYS,
    CheckpointRecord,
    Manifest,
    Segment,
    as_manifest,
)

from ._helpers import ckpt_args, new_package, read_manifest

# What the trainer records at the start of a segment (runtime/trainer.py _segment_info), then at its end.
TRAINER_BEGIN: dict[str, Any] = {
    "kind": "resume",
    "from_checkpoint": 1,
    "start_epoch": 2,
    "env": "DDP",
    "world_size": 2,
    "devices": ["cuda:0: NVIDIA H100"],
    "host": "node-a",
    "node": None,
    "pid": 4242,
    "cuda_visible_devices": None,
    "description": "lr 3e-3",
    "task_id": "T_0007",
    "seed": 1234,
    "environment": ["HF_HOME"],
    "started": 1700000000.5,
}
TRAINER_END: dict[str, Any] = {
    "ended": 1700000100.25,
    "status": "failed",
    "finished_epoch": 3,
    "error": "ValueError: nan loss",
    "peak_gpu_mb": 1536,
}

V1_MANIFEST: dict[str, Any] = {
    "version": 1,
    "prefix": "state_",
    "ckpt_fast": [2, 3],
    "ckpt_slow": [0],
    "ckpt_consistent": [],
    "next_ckpt_id": 4,
    "checkpoints": {
        str(i): {"epoch": i, "step": 10 * i, "time": 1.5, "bytes": 100 + i, "sha256": "ab" * 32}
        for i in (0, 2, 3)
    },
    "name": "2026-01-01_00-00-00_001",
    "description": "first",
    "source_project": "/home/u/proj",
    "seed": 7,
    "created": "2026-01-01T00:00:00+0000",
    "versions": {"dlnest_ray": "0.1", "torch": None},
    "git": None,
    "config_files": [{"source": "/home/u/proj/root_config.json", "copy": "_configs/root_config.json"}],
    "root_config": "/home/u/proj/root_config.json",
    "freq_config": None,
    "segments": [{**TRAINER_BEGIN, **TRAINER_END}],
}


# ------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_record_round_trip_keeps_unknown_keys() -> None:
    raw = {"epoch": 2, "step": 40, "time": 3.0, "bytes": 512, "sha256": "f" * 64, "dtype_hint": {"w": "bf16"}}
    rec = CheckpointRecord.from_json(5, raw)
    assert (rec.id, rec.epoch, rec.step, rec.bytes, rec.sha256) == (5, 2, 40, 512, "f" * 64)
    assert rec.extra == {"dtype_hint": {"w": "bf16"}}
    assert rec.to_json() == raw


def test_checkpoint_record_writes_null_fields_as_before() -> None:
    rec = CheckpointRecord(id=0, epoch=None, step=None, time=1.0, bytes=3, sha256=None)
    assert rec.to_json() == {"epoch": None, "step": None, "time": 1.0, "bytes": 3, "sha256": None}


def test_checkpoint_record_without_a_size_is_refused() -> None:
    with pytest.raises(PackageError, match="checkpoint 4"):
        CheckpointRecord.from_json(4, {"epoch": 1, "time": 1.0})


# ------------------------------------------------------------------------------------------- segments
def test_trainer_segment_round_trips_exactly() -> None:
    raw = {**TRAINER_BEGIN, **TRAINER_END}
    seg = Segment.from_json(raw)
    assert seg.kind == "resume" and seg.from_checkpoint == 1 and seg.world_size == 2
    assert seg.devices == ("cuda:0: NVIDIA H100",) and seg.environment == ("HF_HOME",)
    assert seg.node is None and seg.peak_gpu_mb == 1536 and seg.has_ended
    assert seg.duration_s == pytest.approx(99.75)
    assert seg.to_json() == raw  # nulls written back as nulls, lists as lists


def test_segment_keeps_unknown_keys_and_odd_values() -> None:
    raw = {"kind": "train", "world_size": "two", "gpu_model": "H200", "retry_of": {"attempt": 2}}
    seg = Segment.from_json(raw)
    assert seg.world_size is None  # not an int: the typed field cannot hold it ...
    assert seg.extra == {"world_size": "two", "gpu_model": "H200", "retry_of": {"attempt": 2}}
    assert seg.to_json() == raw  # ... but the value is written back as it was


def test_segment_made_in_code_leaves_out_what_it_does_not_know() -> None:
    seg = Segment(kind="train", task_id="T_0001", devices=("cpu",), started=2.0)
    assert seg.to_json() == {"kind": "train", "task_id": "T_0001", "devices": ["cpu"], "started": 2.0}
    assert Segment.from_json(seg.to_json()) == seg
    assert seg.duration_s is None and not seg.has_ended


def test_segment_merged_adds_an_end() -> None:
    seg = Segment.from_json(TRAINER_BEGIN)
    ended = seg.merged({**TRAINER_END, "note": "x"})
    assert ended.status == "failed" and ended.error == "ValueError: nan loss" and ended.extra == {"note": "x"}
    assert ended.to_json() == {**TRAINER_BEGIN, **TRAINER_END, "note": "x"}
    assert seg.status is None  # records are values: merged() made a new one


def test_to_json_gives_fresh_objects() -> None:
    seg = Segment.from_json({"devices": ["cpu"], "x": {"y": 1}})
    out = seg.to_json()
    out["devices"].append("gpu")
    out["x"]["y"] = 2
    assert seg.to_json() == {"devices": ["cpu"], "x": {"y": 1}}


# ------------------------------------------------------------------------------------------- manifests
def test_v1_manifest_round_trips_exactly() -> None:
    m = Manifest.from_json(V1_MANIFEST)
    assert m.version == 1 and not m.is_dlnest
    assert (m.ckpt_fast, m.ckpt_slow, m.ckpt_consistent, m.next_ckpt_id) == ((2, 3), (0,), (), 4)
    assert sorted(m.checkpoints or {}) == [0, 2, 3] and (m.checkpoints or {})[3].bytes == 103
    assert m.seed == 7 and m.git is None and m.freq_config is None and m.description == "first"
    assert m.config_files == (
        {"source": "/home/u/proj/root_config.json", "copy": "_configs/root_config.json"},
    )
    assert m.segment_of("T_0007") == m.segments[0] and m.segment_of("T_0008") is None
    assert m.to_json() == V1_MANIFEST


def test_newer_manifest_keeps_its_version_and_keys() -> None:
    newer = json.loads(json.dumps(V1_MANIFEST))
    newer["version"] = MANIFEST_VERSION + 1
    newer["retention"] = {"policy": "best-k", "k": 3}
    newer["segments"][0]["energy_wh"] = 2  # a key this version does not know
    newer["checkpoints"]["3"]["metric"] = 0.91
    m = Manifest.from_json(newer)
    assert m.extra == {"retention": {"policy": "best-k", "k": 3}}
    assert m.segments[0].extra == {"energy_wh": 2}
    assert (m.checkpoints or {})[3].extra == {"metric": 0.91}
    assert m.to_json() == newer


def test_dlnest_manifest_opens() -> None:
    dlnest = {"prefix": "state_", "ckpt_slow": [0, 3], "ckpt_fast": [5, 6], "ckpt_consistent": [2]}
    m = Manifest.from_json(dlnest)
    assert m.is_dlnest and m.version == 0 and m.checkpoints is None and m.next_ckpt_id is None
    assert m.tracks.held() == {0, 2, 3, 5, 6} and m.tracks.next_id == 7
    assert m.segments == () and m.seed is None and m.meta_json() == {"segments": []}
    out = m.to_json()
    assert {k: out[k] for k in dlnest} == dlnest  # DLNest's keys as they were ...
    assert out["version"] == MANIFEST_VERSION and "checkpoints" not in out  # ... and no records invented


def test_meta_json_is_everything_but_the_checkpoint_keys() -> None:
    meta = Manifest.from_json(V1_MANIFEST).meta_json()
    assert set(meta) == set(V1_MANIFEST) - set(TRACK_KEYS)
    assert meta["segments"] == V1_MANIFEST["segments"]
    assert as_manifest(meta).segments == Manifest.from_json(V1_MANIFEST).segments


@pytest.mark.parametrize(
    "bad",
    [
        {"ckpt_fast": "3"},
        {"ckpt_fast": [1.5]},
        {"ckpt_slow": [-1]},
        {"checkpoints": []},
        {"checkpoints": {"x": {"bytes": 1, "time": 0}}},
        {"version": "1"},
        {"prefix": 3},
        {"next_ckpt_id": -2},
    ],
)
def test_malformed_checkpoint_keys_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PackageError):
        Manifest.from_json({**V1_MANIFEST, **bad})


def test_a_segment_that_is_not_a_record_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dlnest_ray.savepack.records"):
        m = Manifest.from_json({**V1_MANIFEST, "segments": ["garbage", {"kind": "train"}]})
    assert [s.kind for s in m.segments] == ["train"]
    assert "not a record" in caplog.text


def test_facts_read_typed_records_and_dicts_alike() -> None:
    m = Manifest.from_json(V1_MANIFEST)
    assert package_description(m) == package_description(m.meta_json()) == "lr 3e-3"
    assert peak_gpu_mb(m) == peak_gpu_mb(m.meta_json()) == 1536
    later = replace(m, segments=(*m.segments, Segment(kind="resume", description="  ")))
    assert package_description(later) == "lr 3e-3"  # a blank description does not hide the earlier one


# ------------------------------------------------------------------------------------------- on disk
def test_package_written_by_newer_code_opens_and_keeps_everything(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=3)
    assert pkg.path is not None
    pkg.save_checkpoint({"w": torch.zeros(2)}, epoch=0, step=5)
    pkg.end_segment(pkg.begin_segment({"kind": "train", "task_id": "T_0001"}), status="succeeded")
    newer = read_manifest(pkg.path)
    newer["version"] = MANIFEST_VERSION + 1
    newer["retention"] = {"policy": "best-k"}
    newer["segments"][0]["energy_wh"] = 2
    newer["checkpoints"]["0"]["metric"] = 0.5
    (pkg.path / "_package.json").write_text(json.dumps(newer))

    again = SavePackage.open(pkg.path)
    assert again.segment_of("T_0001") is not None and again.segments()[0].extra == {"energy_wh": 2}
    again.save_checkpoint({"w": torch.ones(2)}, epoch=1, step=10)
    again.end_segment(again.begin_segment({"kind": "resume", "task_id": "T_0002"}), status="failed")
    after = read_manifest(pkg.path)
    assert after["version"] == MANIFEST_VERSION + 1
    assert after["retention"] == {"policy": "best-k"}
    assert after["segments"][0]["energy_wh"] == 2 and after["segments"][1]["status"] == "failed"
    assert after["checkpoints"]["0"]["metric"] == 0.5 and after["checkpoints"]["1"]["epoch"] == 1
    assert again.meta["retention"] == {"policy": "best-k"}


def test_dlnest_package_reads_typed(tmp_path: Path) -> None:
    path = tmp_path / "old"
    (path / "Checkpoints").mkdir(parents=True)
    (path / "args.json").write_text(json.dumps({"save_root": str(tmp_path), "checkpoint_args": ckpt_args()}))
    (path / "_package.json").write_text(
        json.dumps({"prefix": "state_", "ckpt_fast": [0, 1], "ckpt_slow": [0], "ckpt_consistent": []})
    )
    for k in (0, 1):
        torch.save({"id": k}, path / "Checkpoints" / f"state_{k}.ckpt")
    torch.save({"id": 4}, path / "Checkpoints" / "state_4.ckpt")  # an untracked file: DLNest numbers past it
    pkg = SavePackage.open(path)
    assert pkg.segments() == [] and pkg.seed is None
    assert sorted(pkg.records) == [0, 1] and pkg.records[1].sha256 is None
    assert pkg.manifest.next_ckpt_id == 5 and pkg.tracks.next_id == 5
