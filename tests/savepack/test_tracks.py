"""Checkpoint tracks: DLNest's fast/slow/consistent rules, on the pure functions and on real packages."""

from __future__ import annotations

import json
import pathlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlnest_ray.errors import CheckpointError
from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.savepack.tracks import TrackLimits, TrackState, admit, truncate

from ._helpers import CKPT_FILE_RE, RefTracks, ids_on_disk, new_package, read_manifest, run_reference

ORACLE_LIMITS = TrackLimits(fast=2, slow=2, dilation=3, consistent=1)
ORACLE_HOLDS = [i in (1, 4) for i in range(10)]


def run_admit(limits: TrackLimits, holds: list[bool]) -> tuple[TrackState, set[int]]:
    """Drive ``admit`` and a simulated disk; return the final state and the files left."""
    state, disk = TrackState(), set()
    for hold in holds:
        adm = admit(state, limits, hold=hold)
        assert adm.ckpt_id == state.next_id
        disk.add(adm.ckpt_id)
        disk -= set(adm.delete)
        state = adm.state
    return state, disk


# ----------------------------------------------------------------------------------------- oracle


def test_oracle_on_pure_admit() -> None:
    state, disk = run_admit(ORACLE_LIMITS, ORACLE_HOLDS)
    assert disk == {4, 6, 8, 9}
    assert state.fast == (8, 9)
    assert state.slow == (6, 9)
    assert state.consistent == (4,)
    assert state.held() == {4, 6, 8, 9}
    assert state.next_id == 10


def test_oracle_step_by_step_deletions() -> None:
    state = TrackState()
    deletes = []
    for hold in ORACLE_HOLDS:
        adm = admit(state, ORACLE_LIMITS, hold=hold)
        deletes.append(adm.delete)
        state = adm.state
    # 2 leaves fast and 1 leaves consistent at 4; 0 leaves slow at 6; 3 leaves slow at 9
    assert deletes == [(), (), (), (), (1, 2), (), (0,), (5,), (), (3, 7)]


def test_max_zero_admits_and_immediately_evicts() -> None:
    limits = TrackLimits(fast=0, slow=0, dilation=1, consistent=0)
    state = TrackState()
    for k in range(4):
        adm = admit(state, limits, hold=True)
        assert adm.ckpt_id == k
        assert adm.delete == (k,)
        assert adm.state.held() == frozenset()
        state = adm.state
    assert state.next_id == 4


def test_zero_fast_track_but_held() -> None:
    limits = TrackLimits(fast=0, slow=0, dilation=1, consistent=1)
    adm0 = admit(TrackState(), limits, hold=True)
    assert adm0.delete == () and adm0.state.consistent == (0,)
    adm1 = admit(adm0.state, limits, hold=False)
    assert adm1.delete == (1,)
    assert adm1.state.held() == {0}
    adm2 = admit(adm1.state, limits, hold=True)
    assert adm2.delete == (0,)
    assert adm2.state.held() == {2}


def test_invalid_limits_refused() -> None:
    with pytest.raises(ValueError):
        TrackLimits(fast=-1, slow=0, dilation=1, consistent=0)
    with pytest.raises(ValueError):
        TrackLimits(fast=1, slow=0, dilation=0, consistent=0)


def test_truncate() -> None:
    state, _ = run_admit(ORACLE_LIMITS, ORACLE_HOLDS)
    new, dropped = truncate(state, 7)
    assert dropped == (8, 9)
    assert new.fast == () and new.slow == (6,) and new.consistent == (4,)
    assert new.next_id == 7
    with pytest.raises(ValueError):
        truncate(state, -1)


# ----------------------------------------------------------------------------------------- properties (pure)

LIMITS = st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 4), st.integers(0, 4))


@settings(max_examples=200, deadline=None)
@given(LIMITS, st.lists(st.booleans(), max_size=30))
def test_admit_matches_reference(limits: tuple[int, int, int, int], holds: list[bool]) -> None:
    fast, slow, dilation, consistent = limits
    tl = TrackLimits(fast=fast, slow=slow, dilation=dilation, consistent=consistent)
    ref = RefTracks(*limits)
    state: TrackState = TrackState()
    disk: set[int] = set()
    held_ids: list[int] = []
    for hold in holds:
        adm = admit(state, tl, hold=hold)
        k = ref.save(hold)
        assert adm.ckpt_id == k
        assert list(adm.delete) == sorted(set(adm.delete))
        disk.add(k)
        disk -= set(adm.delete)
        state = adm.state
        if hold:
            held_ids.append(k)
        # the tracks are exactly the reference's
        assert (list(state.fast), list(state.slow), list(state.consistent)) == (
            ref.fast,
            ref.slow,
            ref.consistent,
        )
        # files on disk = union of the three tracks
        assert disk == ref.disk == set(state.held()) == ref.held()
        # the newest checkpoint survives whenever the fast track keeps anything
        if fast >= 1:
            assert k in disk
        # a held checkpoint survives until `consistent` newer holds push it out
        for n, h in enumerate(held_ids):
            newer_holds = len(held_ids) - n - 1
            if newer_holds < consistent:
                assert h in disk
                assert h in state.consistent
            else:
                assert h not in state.consistent
    assert state.next_id == len(holds)


@settings(max_examples=200, deadline=None)
@given(LIMITS, st.lists(st.booleans(), max_size=20), st.integers(0, 25))
def test_truncate_property(limits: tuple[int, int, int, int], holds: list[bool], cut: int) -> None:
    fast, slow, dilation, consistent = limits
    tl = TrackLimits(fast=fast, slow=slow, dilation=dilation, consistent=consistent)
    state, _ = run_admit(tl, holds)
    new, dropped = truncate(state, cut)
    assert set(new.held()) == {i for i in state.held() if i < cut}
    assert set(dropped) == {i for i in state.held() if i >= cut}
    assert list(dropped) == sorted(dropped)
    assert new.next_id == min(cut, state.next_id)
    # order inside each track is kept
    assert new.fast == tuple(i for i in state.fast if i < cut)
    assert new.slow == tuple(i for i in state.slow if i < cut)
    assert new.consistent == tuple(i for i in state.consistent if i < cut)
    if cut <= state.next_id:
        assert admit(new, tl, hold=False).ckpt_id == cut


# ----------------------------------------------------------------------------------------- real packages


def tiny_state(k: int) -> dict[str, Any]:
    return {"id": k, "w": torch.full((3,), float(k))}


def check_oracle_package(path: Path) -> None:
    assert ids_on_disk(path) == {4, 6, 8, 9}
    man = read_manifest(path)
    assert man["prefix"] == "state_"
    assert man["ckpt_fast"] == [8, 9]
    assert man["ckpt_slow"] == [6, 9]
    assert man["ckpt_consistent"] == [4]
    assert sorted(int(i) for i in man["checkpoints"]) == [4, 6, 8, 9]
    for rec in man["checkpoints"].values():
        assert rec["bytes"] > 0 and len(rec["sha256"]) == 64
    assert man["next_ckpt_id"] == 10
    reopened = SavePackage.open(path)
    assert reopened.tracks.held() == {4, 6, 8, 9}
    assert reopened.latest_valid_id() == 9
    assert reopened.state_dict()["id"] == 9
    for k in (4, 6, 8, 9):
        loaded = reopened.state_dict(k)
        assert loaded["id"] == k and torch.equal(loaded["w"], torch.full((3,), float(k)))
    for k in (0, 1, 2, 3, 5, 7):
        with pytest.raises(CheckpointError):
            reopened.state_dict(k)


def test_oracle_on_real_package_wait(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=2, slow=2, dilation=3, consistent=1)
    assert pkg.path is not None
    for k, hold in enumerate(ORACLE_HOLDS):
        assert pkg.save_checkpoint(tiny_state(k), hold=hold, epoch=k, step=10 * k) == k
        ref = run_reference((2, 2, 3, 1), ORACLE_HOLDS[: k + 1])
        assert ids_on_disk(pkg.path) == ref.disk == set(pkg.tracks.held())
    check_oracle_package(pkg.path)
    man = read_manifest(pkg.path)
    assert man["checkpoints"]["6"]["epoch"] == 6 and man["checkpoints"]["6"]["step"] == 60


def test_oracle_on_real_package_async(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=2, slow=2, dilation=3, consistent=1)
    assert pkg.path is not None
    ids = [pkg.save_checkpoint(tiny_state(k), hold=hold, wait=False) for k, hold in enumerate(ORACLE_HOLDS)]
    assert ids == list(range(10))
    pkg.flush()
    check_oracle_package(pkg.path)


def test_all_zero_limits_real_package(tmp_path: Path) -> None:
    pkg = new_package(tmp_path / "Saves", fast=0, slow=0, dilation=1, consistent=0)
    assert pkg.path is not None
    for k in range(3):
        assert pkg.save_checkpoint(tiny_state(k), hold=True) == k
    assert ids_on_disk(pkg.path) == set()
    man = read_manifest(pkg.path)
    assert man["checkpoints"] == {}
    assert man["next_ckpt_id"] == 3
    assert pkg.latest_valid_id() is None
    with pytest.raises(CheckpointError):
        pkg.state_dict()


def test_manifest_written_before_evicted_files_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = new_package(tmp_path / "Saves", fast=1, slow=0, dilation=1, consistent=1)
    assert pkg.path is not None
    manifest = pkg.path / "_package.json"
    seen: list[tuple[int, dict[str, Any]]] = []
    real_unlink = pathlib.Path.unlink

    def spy_unlink(self: pathlib.Path, missing_ok: bool = False) -> None:
        m = CKPT_FILE_RE.match(self.name)
        if m and self.parent == pkg.ckpt_dir:
            # at the moment a checkpoint file goes away, the manifest on disk must already be valid and
            # must no longer name it
            seen.append((int(m[1]), json.loads(manifest.read_text(encoding="utf-8"))))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", spy_unlink)
    for k in range(6):
        pkg.save_checkpoint(tiny_state(k), hold=k == 2, wait=k % 2 == 0)
    pkg.flush()
    assert sorted(i for i, _ in seen) == [0, 1, 3, 4]
    for ckpt_id, man in seen:
        assert str(ckpt_id) not in man["checkpoints"]
        assert ckpt_id not in man["ckpt_fast"] + man["ckpt_slow"] + man["ckpt_consistent"]
    assert ids_on_disk(pkg.path) == {2, 5}
    assert not list(pkg.path.glob(".*.tmp-*"))


# ----------------------------------------------------------------------------------------- property (real)

SMALL_LIMITS = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 3), st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SMALL_LIMITS, st.lists(st.booleans(), max_size=9), st.booleans())
def test_real_package_matches_reference(
    limits: tuple[int, int, int, int], holds: list[bool], use_async: bool
) -> None:
    fast, slow, dilation, consistent = limits
    with tempfile.TemporaryDirectory() as d:
        pkg = new_package(Path(d) / "Saves", fast=fast, slow=slow, dilation=dilation, consistent=consistent)
        assert pkg.path is not None
        ref = RefTracks(*limits)
        for k, hold in enumerate(holds):
            assert pkg.save_checkpoint(tiny_state(k), hold=hold, wait=not use_async) == k
            ref.save(hold)
            if not use_async:
                assert ids_on_disk(pkg.path) == ref.disk == set(pkg.tracks.held())
        pkg.flush()
        assert ids_on_disk(pkg.path) == ref.disk == set(pkg.tracks.held())
        man = read_manifest(pkg.path)
        assert (man["ckpt_fast"], man["ckpt_slow"], man["ckpt_consistent"]) == (
            ref.fast,
            ref.slow,
            ref.consistent,
        )
        assert {int(i) for i in man["checkpoints"]} == ref.disk
        reopened = SavePackage.open(pkg.path)
        if ref.disk:
            newest = max(ref.disk)
            assert reopened.latest_valid_id() == newest
            assert reopened.state_dict()["id"] == newest
            if fast >= 1:
                assert newest == len(holds) - 1
        else:
            assert reopened.latest_valid_id() is None
