"""SavePackage's typed segment API, DLNest's initFromAnExistSavePackage and saveVisualString."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import dlnest_ray.savepack.package as package_mod
from dlnest_ray.errors import PackageError
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.savepack.records import Segment

from ._helpers import ids_on_disk, listing, new_package, read_manifest


def _package(tmp_path: Path, name: str) -> Path:
    pkg = new_package(tmp_path / name, fast=5)
    assert pkg.path is not None
    return pkg.path


def _join_writer_threads() -> None:
    for t in threading.enumerate():
        if t.name == "dlnest-ckpt-writer":
            t.join(30)


# ------------------------------------------------------------------------------------------- segments
def test_segments_typed_and_as_dicts(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None and pkg.segments() == []
    first = pkg.begin_segment({"kind": "train", "task_id": "T_0001", "node": None})  # the trainer's dict form
    pkg.end_segment(first, status="failed", finished_epoch=0, error="boom")
    second = pkg.begin_segment(Segment(kind="resume", task_id="T_0002", from_checkpoint=0))
    third = pkg.begin_segment(Segment(kind="resume", task_id="T_0001", started=5.0))
    pkg.end_segment(second, status="succeeded", finished_epoch=2)
    assert (first, second, third) == (0, 1, 2)

    reopened = SavePackage.open(pkg.path)
    segs = reopened.segments()
    assert [(s.kind, s.task_id, s.status) for s in segs] == [
        ("train", "T_0001", "failed"),
        ("resume", "T_0002", "succeeded"),
        ("resume", "T_0001", None),
    ]
    assert segs[0].started is not None and segs[0].ended is not None and segs[0].ended >= segs[0].started
    assert segs[2].started == 5.0 and not segs[2].has_ended
    assert reopened.segment_of("T_0001") == segs[2]  # the latest one of that task
    assert reopened.segment_of("T_0009") is None
    # callers that read dicts see the same as before: plain dicts, nulls where the trainer gave nulls
    as_dicts = reopened.meta["segments"]
    assert as_dicts == read_manifest(pkg.path)["segments"]
    assert as_dicts[0]["node"] is None and as_dicts[0]["error"] == "boom"
    assert "node" not in as_dicts[1]


def test_meta_is_a_copy_and_update_meta_writes(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    pkg.begin_segment({"kind": "train", "devices": ["cpu"]})
    meta = pkg.meta
    meta["segments"][0]["devices"].append("cuda:0")
    meta["description"] = "changed only here"
    assert pkg.segments()[0].devices == ("cpu",) and pkg.meta["description"] == ""
    pkg.update_meta(description="set", notes={"a": 1})
    assert read_manifest(pkg.path)["description"] == "set"
    assert SavePackage.open(pkg.path).meta["notes"] == {"a": 1}
    assert SavePackage.open(pkg.path).manifest.description == "set"
    before = read_manifest(pkg.path)
    with pytest.raises(PackageError, match="checkpoints"):
        pkg.update_meta(checkpoints={}, seed=1)
    assert read_manifest(pkg.path) == before


# ------------------------------------------------------------------------ initFromAnExistSavePackage
def test_objects_opened_the_dlnest_way_keep_their_own_lock_and_writer(tmp_path: Path) -> None:
    p1, p2 = _package(tmp_path, "a"), _package(tmp_path, "b")
    a, b = SavePackage(), SavePackage()
    own = [(a._lock, a._writer), (b._lock, b._writer)]
    a.initFromAnExistSavePackage(p1)
    b.initFromAnExistSavePackage(p2)
    assert [(a._lock, a._writer), (b._lock, b._writer)] == own  # the very objects each had
    assert a._lock is not b._lock and a._writer is not b._writer
    assert (a.path, b.path) == (p1, p2)
    # background writes through both at once land each in its own package
    for k in range(3):
        a.saveACheckpoint({"pkg": "a", "k": k})
        a.save_checkpoint({"pkg": "a", "k": k + 10}, wait=False)
        b.save_checkpoint({"pkg": "b", "k": k}, wait=False)
    a.flush()
    b.flush()
    assert ids_on_disk(p1) == set(range(6)) and ids_on_disk(p2) == {0, 1, 2}
    assert sorted(read_manifest(p1)["checkpoints"]) == ["0", "1", "2", "3", "4", "5"]
    assert sorted(read_manifest(p2)["checkpoints"]) == ["0", "1", "2"]
    assert a.getStateDict() == {"pkg": "a", "k": 12} and b.getStateDict() == {"pkg": "b", "k": 2}


def test_a_pending_write_finishes_in_its_own_package_before_another_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p1, p2 = _package(tmp_path, "a"), _package(tmp_path, "b")
    p2_before = read_manifest(p2)
    real_write = package_mod.write_file

    def slow_write(path: Path, state: Any) -> tuple[int, str]:
        time.sleep(0.5)
        return real_write(path, state)

    monkeypatch.setattr(package_mod, "write_file", slow_write)
    pkg = SavePackage.open(p1)
    pkg.save_checkpoint({"w": torch.ones(3)}, wait=False)  # still being written ...
    pkg.initFromAnExistSavePackage(p2)  # ... when the object is pointed at another package
    _join_writer_threads()
    assert read_manifest(p2) == p2_before  # the other package got no record of a file it does not have
    assert sorted(read_manifest(p1)["checkpoints"]) == ["0"]
    assert pkg.path == p2 and pkg.checkpoint_ids() == []
    assert torch.equal(SavePackage.open(p1).state_dict()["w"], torch.ones(3))


# ------------------------------------------------------------------------------------------- saveVisualString
def test_save_visual_string_writes_an_empty_marker(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    marker = pkg.save_visual_string("desc: lr 3e-3, wider")
    assert marker == pkg.path / "desc: lr 3e-3, wider"
    assert marker.is_file() and marker.read_bytes() == b""
    assert pkg.saveVisualString("best acc 0.98") == pkg.path / "best acc 0.98"
    (pkg.path / "kept").write_text("mine")
    pkg.saveVisualString("kept")
    assert (pkg.path / "kept").read_text() == "mine"  # an existing file is not emptied


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "..",
        ".",
        ".hidden",
        "../escape",
        " padded",
        "x\\y",
        "args.json",
        "_package.json",
        "_output_0.txt",
    ],
)
def test_save_visual_string_refuses_what_package_names_refuse(tmp_path: Path, bad: str) -> None:
    pkg = new_package(tmp_path / "Saves")
    assert pkg.path is not None
    before = listing(tmp_path)
    with pytest.raises(PackageError):
        pkg.saveVisualString(bad)
    assert listing(tmp_path) == before


def test_save_visual_string_needs_a_folder() -> None:
    with pytest.raises(PackageError, match="no folder yet"):
        SavePackage().saveVisualString("note")
