"""A restore completes only when the hub finds each read-back equal to the point's checksum."""

from __future__ import annotations

import json

from sendense_tools.hub.restore_endings import compare

POINT = {"algorithm": "blake2b", "block_size": 4 << 20, "checksum": "ab" * 32}


def row(disk_id: str, got: dict | None) -> dict:
    return {"disk_id": disk_id, "expected_checksum": json.dumps(POINT),
            "checksum": json.dumps(got) if got is not None else None}  # fmt: skip


def test_equal_checksums_verify_whatever_the_hex_case():
    assert compare([row("disk0", {**POINT, "checksum": "AB" * 32})]) == ({"disk0": True}, [])


def test_a_different_digest_block_size_or_no_read_back_fails_naming_the_disk():
    verified, problems = compare([
        row("disk0", POINT),
        row("disk1", {**POINT, "checksum": "cd" * 32}),
        row("disk2", {**POINT, "block_size": 1 << 20}),
        row("disk3", None),
    ])  # fmt: skip
    assert verified == {"disk0": True, "disk1": False, "disk2": False, "disk3": False}
    assert problems == [
        f"disk1: read back {'cd' * 32}, the point holds {'ab' * 32}",
        f"disk2: read back {'ab' * 32}, the point holds {'ab' * 32}",
        "disk3: the node reported no read-back checksum",
    ]
