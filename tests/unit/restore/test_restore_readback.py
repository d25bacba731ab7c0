"""restore/readback.py: the comparison of a read-back with the point's checksum."""

from __future__ import annotations

import pytest

from sendense_tools.restore.readback import ChecksumMismatch, check

POINT = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "ab" * 32}


def test_the_same_checksum_passes():
    check("disk0", POINT, dict(POINT))


@pytest.mark.parametrize(
    "actual",
    [
        dict(POINT, checksum="cd" * 32),
        dict(POINT, block_size=1 << 20),
        dict(POINT, algorithm="sha256"),
    ],
)
def test_any_difference_fails_naming_the_disk_and_both_checksums(actual):
    with pytest.raises(ChecksumMismatch) as err:
        check("disk2", POINT, actual)
    text = str(err.value)
    assert text.startswith("disk2: ")
    assert POINT["checksum"] in text and actual["checksum"] in text
    assert "\n" not in text
