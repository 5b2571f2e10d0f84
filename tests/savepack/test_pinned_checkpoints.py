"""Pinned checkpoints (issue 14 item 2): the checkpoint a preempted run takes is kept whatever the tracks
evict until the next save releases it; on the pure track functions and on real packages (``ckpt_pinned``
in ``_package.json`` only while something is pinned, kept when the package is reopened)."""

from __future__ import annotations

from pathlib import Path

import torch

from dlnest_ray.savepack.package import SavePackage
from dlnest_ray.savepack.tracks import TrackLimits, TrackState, admit, truncate

from ._helpers import ids_on_disk, new_package, read_manifest

NONE_KEPT = TrackLimits(fast=0, slow=0, dilation=1, consistent=0)
ONE_FAST = TrackLimits(fast=1, slow=0, dilation=1, consistent=0)


def drive(
    limits: TrackLimits, pins: list[bool], state: TrackState | None = None
) -> tuple[TrackState, set[int]]:
    """Admit one checkpoint per entry (pinned where True) against a simulated disk; the state, the files."""
    state, disk = state or TrackState(), set()
    for pin in pins:
        adm = admit(state, limits, hold=False, pin=pin)
        disk.add(adm.ckpt_id)
        disk -= set(adm.delete)
        assert adm.state.held() == disk  # exactly the held ids exist
        state = adm.state
    return state, disk


# ------------------------------------------------------------------------------------------ pure tracks
def test_a_pin_is_kept_beyond_a_fast_limit_of_zero() -> None:
    adm = admit(TrackState(), NONE_KEPT, hold=False, pin=True)
    assert adm.ckpt_id == 0 and adm.delete == ()
    assert adm.state.pinned == (0,) and adm.state.fast == ()
    assert adm.state.held() == {0}
    # without the pin the same save is evicted at once
    assert admit(TrackState(), NONE_KEPT, hold=False).delete == (0,)


def test_the_next_admission_releases_the_pin_and_deletes_it_when_no_track_holds_it() -> None:
    pinned = admit(TrackState(), NONE_KEPT, hold=False, pin=True).state
    adm = admit(pinned, NONE_KEPT, hold=False)
    assert adm.state.pinned == ()
    assert adm.delete == (0, 1)  # the released pin, and the new id evicted at once as ever
    assert adm.state.held() == frozenset()


def test_a_pinned_admission_releases_the_earlier_pin() -> None:
    state, disk = drive(NONE_KEPT, [True, True, True])
    assert state.pinned == (2,) and disk == {2}


def test_a_released_pin_that_a_track_still_holds_is_not_deleted() -> None:
    limits = TrackLimits(fast=2, slow=0, dilation=1, consistent=0)
    pinned = admit(TrackState(), limits, hold=False, pin=True).state
    assert pinned.fast == (0,) and pinned.pinned == (0,)
    adm = admit(pinned, limits, hold=False)
    assert adm.delete == () and adm.state.pinned == ()
    assert adm.state.fast == (0, 1)
    # and it goes the ordinary way once the fast track moves on
    assert admit(adm.state, limits, hold=False).delete == (0,)


def test_a_pin_in_the_consistent_track_stays_after_its_release() -> None:
    limits = TrackLimits(fast=1, slow=0, dilation=1, consistent=1)
    pinned = admit(TrackState(), limits, hold=True, pin=True).state
    adm = admit(pinned, limits, hold=False)
    assert adm.delete == () and adm.state.consistent == (0,) and adm.state.held() == {0, 1}


def test_pins_follow_the_reference_disk_over_a_sequence() -> None:
    state, disk = drive(ONE_FAST, [False, True, False, False, True])
    assert state.pinned == (4,) and state.fast == (4,) and disk == {4}
    state, disk = drive(NONE_KEPT, [False, True, False, True], state=TrackState(next_id=10))
    assert disk == {13} and state.next_id == 14


def test_truncate_drops_pins_at_or_after_the_new_next_id() -> None:
    state = TrackState(fast=(3,), next_id=4, pinned=(3,))
    kept, dropped = truncate(state, 4)  # resume from 3: the pin stays
    assert kept.pinned == (3,) and dropped == ()
    gone, dropped = truncate(state, 3)  # go back to before it: it is forgotten
    assert gone.pinned == () and gone.fast == () and dropped == (3,) and gone.next_id == 3
    only_pinned = TrackState(next_id=6, pinned=(5,))
    new, dropped = truncate(only_pinned, 2)
    assert new.pinned == () and dropped == (5,)


# ----------------------------------------------------------------------------------------- packages
def state(i: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), float(i))}


def test_a_package_keeps_a_pinned_checkpoint_when_no_track_would(tmp_path: Path) -> None:
    pkg = new_package(tmp_path, fast=0, slow=0, consistent=0)
    assert pkg.path is not None
    root = Path(pkg.path)
    assert pkg.save_checkpoint(state(0), epoch=0) == 0
    assert ids_on_disk(root) == set() and "ckpt_pinned" not in read_manifest(root)

    assert pkg.save_checkpoint(state(1), epoch=1, pin=True) == 1
    assert ids_on_disk(root) == {1}
    manifest = read_manifest(root)
    assert manifest["ckpt_pinned"] == [1] and manifest["ckpt_fast"] == []

    reopened = SavePackage.open(root)  # e.g. the continuation that resumes from it
    assert reopened.latest_valid_id() == 1
    assert torch.equal(reopened.state_dict(-1)["w"], state(1)["w"])
    assert reopened.save_checkpoint(state(2), epoch=2) == 2  # the resumed run's next save releases it
    assert ids_on_disk(root) == set()
    assert "ckpt_pinned" not in read_manifest(root)


def test_a_package_with_one_fast_slot_releases_the_pin_at_the_next_save(tmp_path: Path) -> None:
    pkg = new_package(tmp_path, fast=1, slow=0, consistent=0)
    assert pkg.path is not None
    root = Path(pkg.path)
    pkg.save_checkpoint(state(0), epoch=0)
    pkg.save_checkpoint(state(1), epoch=1, pin=True)
    assert ids_on_disk(root) == {1}
    assert read_manifest(root)["ckpt_pinned"] == [1] and read_manifest(root)["ckpt_fast"] == [1]

    reopened = SavePackage.open(root)
    assert read_manifest(root)["ckpt_pinned"] == [1]  # opening changes nothing
    reopened.save_checkpoint(state(2), epoch=2, pin=True)  # preempted again right after resuming
    assert ids_on_disk(root) == {2} and read_manifest(root)["ckpt_pinned"] == [2]
    reopened.save_checkpoint(state(3), epoch=3)
    assert ids_on_disk(root) == {3}
    manifest = read_manifest(root)
    assert "ckpt_pinned" not in manifest and manifest["ckpt_fast"] == [3]


def test_continuing_from_before_a_pin_forgets_it(tmp_path: Path) -> None:
    pkg = new_package(tmp_path, fast=2, slow=0, consistent=0)
    assert pkg.path is not None
    root = Path(pkg.path)
    pkg.save_checkpoint(state(0), epoch=0)
    pkg.save_checkpoint(state(1), epoch=1, pin=True)
    reopened = SavePackage.open(root)
    reopened.set_ckpt_id(1)  # continue from checkpoint 0: the pinned 1 belongs to the abandoned branch
    assert ids_on_disk(root) == {0}
    assert "ckpt_pinned" not in read_manifest(root)
