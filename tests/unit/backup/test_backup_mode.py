"""decide / enforce: an incremental only on evidence, every fall-back with its reason."""

from __future__ import annotations

import pytest

from sendense_tools.backup.mode import (
    Decision,
    IncrementalRefused,
    PreviousDisk,
    SnapshotDisk,
    decide,
    enforce,
)

EPOCH = "52 de c0 d9 3a 70 13 5b-21 5e 8b 46 1a 2b c9 0e"
OTHER_EPOCH = "52 00 11 22 33 44 55 66-77 88 99 aa bb cc dd ee"
GIB = 1 << 30


def now(*extra: SnapshotDisk) -> list[SnapshotDisk]:
    return [
        SnapshotDisk("disk0", 2000, GIB, f"{EPOCH}/8"),
        SnapshotDisk("disk1", 2001, 2 * GIB, f"{OTHER_EPOCH}/3"),
        *extra,
    ]


def prev(**overrides: PreviousDisk) -> dict[str, PreviousDisk]:
    base = {
        "disk0": PreviousDisk(f"{EPOCH}/7", GIB, 2000),
        "disk1": PreviousDisk(f"{OTHER_EPOCH}/2", 2 * GIB, 2001),
    }
    base.update(overrides)
    return base


def test_same_disks_and_epochs_with_cbt_on_give_an_incremental():
    assert decide("auto", prev(), now(), "on") == Decision("incremental")
    assert decide("incremental", prev(), now(), "on") == Decision("incremental")


def test_change_ids_without_capacity_or_key_are_enough():
    bare = {k: PreviousDisk(p.change_id) for k, p in prev().items()}
    assert decide("auto", bare, now(), "on").mode == "incremental"


@pytest.mark.parametrize(
    ("requested", "changed_since", "disks", "cbt", "reason"),
    [
        ("full", prev(), now(), "on", "a full backup was asked for"),
        ("auto", None, now(), "on", "no previous point"),
        ("auto", {}, now(), "on", "no previous point"),
        ("auto", prev(), now(), "off", "CBT is off ([backup] cbt = false)"),
        ("auto", prev(), now(), "enabled", "CBT was just enabled"),
        ("auto", prev(), now(SnapshotDisk("disk2", 2002, GIB, f"{EPOCH}/1")), "on",
         "disk2 was added"),
        ("auto", prev(disk2=PreviousDisk(f"{EPOCH}/1")), now(), "on", "disk2 was removed"),
        ("auto", prev(disk0=PreviousDisk(f"{EPOCH}/7", GIB, 2005)), now(), "on",
         "disk0 was re-keyed (2005 -> 2000)"),
        ("auto", prev(disk1=PreviousDisk(f"{OTHER_EPOCH}/2", GIB, 2001)), now(), "on",
         f"disk1 was resized ({GIB} -> {2 * GIB} bytes)"),
        ("auto", prev(disk0=PreviousDisk(f"{OTHER_EPOCH}/7")), now(), "on",
         "change id of disk0 is from another CBT epoch"),
        ("auto", prev(disk0=PreviousDisk("junk")), now(), "on",
         "change id of disk0: 'junk' is not a change id (UUID/SEQUENCE)"),
        ("auto", prev(), [SnapshotDisk("disk0", 2000, GIB, None), now()[1]], "on",
         "disk0 has no change id in the snapshot"),
    ],
)  # fmt: skip
def test_each_missing_piece_of_evidence_falls_back_to_a_full_with_its_reason(
    requested, changed_since, disks, cbt, reason
):
    assert decide(requested, changed_since, disks, cbt) == Decision("full", reason)


def test_cbt_that_vcenter_would_not_enable_is_a_full_naming_the_refusal():
    got = decide(
        "auto", prev(), now(), "refused", "permission to perform this operation was denied"
    )
    assert got == Decision(
        "full", "CBT could not be enabled: permission to perform this operation was denied"
    )


def test_a_demanded_incremental_that_falls_back_is_refused_with_the_reason():
    with pytest.raises(IncrementalRefused, match=r"not possible: CBT was just enabled$"):
        enforce("incremental", decide("incremental", prev(), now(), "enabled"))


def test_enforce_lets_auto_fall_back_and_incremental_pass():
    full = Decision("full", "no previous point")
    assert enforce("auto", full) == full
    assert enforce("incremental", Decision("incremental")) == Decision("incremental")
