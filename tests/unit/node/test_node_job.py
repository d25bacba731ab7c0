"""Job records: the incremental fields survive the spool, and older records still load."""

from __future__ import annotations

from sendense_tools.node.job import DiskState, Job


def test_a_record_round_trips_mode_change_ids_and_areas():
    disk = DiskState("disk0", 1 << 20, 4096, None, "52 aa-bb/3", None,
                     {"algorithm": "blake2b", "areas": 1, "bytes": 65536, "digest": "ab"},
                     [(0, 65536)])  # fmt: skip
    job = Job("j1", "vm", "vm-1", {"disk0": disk}, status="completed", mode="incremental")
    again = Job.from_record(job.as_dict())
    assert again.as_dict() == job.as_dict()
    assert again.disks["disk0"] == disk
    report = job.hub_report()
    assert (report["mode"], report["mode_reason"]) == ("incremental", None)
    assert report["disks"][0]["areas"] == [[0, 65536]]


def test_a_record_spooled_before_incrementals_loads_with_nulls():
    old = {
        "job_id": "j0", "vm": "vm", "moref": "vm-1", "status": "completed", "started_at": 1.0,
        "disks": [{"disk_id": "disk0", "bytes_total": 10, "bytes_copied": 10, "sha256": "ff"}],
    }  # fmt: skip
    job = Job.from_record(old)
    assert job.mode is None and job.mode_reason is None
    assert job.disks["disk0"] == DiskState("disk0", 10, 10, "ff")
