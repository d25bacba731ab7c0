"""The demo's restore table (sendense_tools/lab/restored.py), on its own and as the
summary's last check."""

import io

import pytest
from rich.console import Console

from sendense_tools.lab.restored import Restored, render_restored
from sendense_tools.lab.summary import DemoFacts, render

POINT_SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "1f" * 32}
OTHER_SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "2e" * 32}
SHA = "a" * 64


def point() -> dict:
    return {
        "id": "b1",
        "vm": "vm0",
        "mode": "full",
        "status": "completed",
        "snapshot": "sendense-b1",
        "created_at": "2026-11-25T10:00:00+00:00",
        "finished_at": "2026-11-25T10:00:04+00:00",
        "disk_results": [
            {
                "disk_id": "disk0",
                "capacity": 8_000_000,
                "checksum": POINT_SUM,
                "sha256": SHA,
                "sha256_qcow2": SHA,
            }
        ],
    }


def restored(**changes) -> Restored:
    disk = {
        "disk_id": "disk0",
        "capacity": 8_000_000,
        "bytes_written": 8_000_000,
        "bytes_total": 8_000_000,
        "expected_checksum": POINT_SUM,
        "checksum": POINT_SUM,
        "verified": True,
    } | changes.pop("disk", {})
    record = {
        "id": "r-1",
        "backup_id": "b1",
        "vm": "vm0",
        "name": "vm0-restored",
        "status": "completed",
        "moref": "vm-42",
        "datastore": "LocalDS_0",
        "warnings": [],
        "error": None,
        "disks": [disk],
    } | changes.pop("record", {})
    facts = {
        "record": record,
        "point": point(),
        "newest": "b2",
        "point_contents": {"disk0": SHA},
        "vm_disks": {"disks": [{"disk_id": "disk0", "sha256": SHA}]},
    } | changes
    return Restored(**facts)


def run(facts: Restored, incremental_id: str | None = "b2") -> tuple[bool, str]:
    out = io.StringIO()
    ok = render_restored(facts, Console(file=out, width=250), incremental_id)
    return ok, out.getvalue()


def test_a_verified_restore_of_the_full_passes_and_shows_both_checksums():
    ok, text = run(restored())
    assert ok, text
    row = next(line for line in text.splitlines() if "disk0" in line)
    assert row.count(POINT_SUM["checksum"]) == 2
    assert "NO" not in text
    assert "new VM vm0-restored (vm-42)" in text and "the newest point is b2" in text


@pytest.mark.parametrize(
    "bad",
    [
        {"disk": {"checksum": OTHER_SUM, "verified": False}},  # read back differs
        {"disk": {"verified": None, "checksum": None}},  # never checked
        {"vm_disks": {"disks": [{"disk_id": "disk0", "sha256": "b" * 64}]}},  # files differ
        {"vm_disks": {"disks": []}},  # the new VM's disks could not be read
        {"record": {"status": "failed", "error": "disk0: PUT refused"}},
        {"record": {"backup_id": "b2"}},  # another point than the first
        {"newest": "b1"},  # the restored point became the newest
        {"newest": "b3"},  # something else became the newest
    ],
)
def test_a_restore_that_is_not_the_first_point_bit_for_bit_fails(bad):
    ok, text = run(restored(**bad))
    assert not ok, text


def test_a_restore_with_a_disk_missing_fails():
    facts = restored()
    facts.point["disk_results"].append(
        {"disk_id": "disk1", "capacity": 1, "checksum": POINT_SUM, "sha256": SHA}
    )
    ok, _ = run(facts)
    assert not ok


def test_warnings_are_shown():
    ok, text = run(restored(record={"warnings": ["NIC 1: network 'X' missing, disconnected"]}))
    assert ok
    assert "warning: NIC 1: network 'X' missing, disconnected" in text


def test_the_summary_fails_when_the_restore_fails():
    scores = {"sendense-hub": 1.3, "sendense-node": 1.2, "sendense-tunnel": 1.2}
    seed = {"vm": "vm0", "disks": [{"disk_id": "disk0", "sha256": SHA}]}
    good, bad = io.StringIO(), io.StringIO()
    assert render(DemoFacts(point(), seed, [], scores, None, restored()), Console(file=good))
    failed = restored(record={"status": "failed"})
    assert not render(DemoFacts(point(), seed, [], scores, None, failed), Console(file=bad))
    assert "all checks passed" in good.getvalue()
    assert "demo: FAILED" in bad.getvalue()
