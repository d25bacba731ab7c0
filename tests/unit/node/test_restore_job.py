"""node/restore_job.py: reports the hub's model takes, records that survive a restart."""

from __future__ import annotations

from sendense_tools.hub.restore_schemas import RestoreReport
from sendense_tools.node.restore_job import RestoreDiskState, RestoreJob
from sendense_tools.node.restore_schemas import NodeRestore

SUM = {"algorithm": "blake2b", "block_size": 4194304, "checksum": "ab" * 32}


def job() -> RestoreJob:
    disks = {"disk0": RestoreDiskState("disk0", 1 << 20, SUM, 4096, dict(SUM), True)}
    return RestoreJob("r-1", "new", disks, datacenter="DC0", datastore="LocalDS_0",
                      phase="writing", moref="vm-9", warnings=["NIC 0: added disconnected"],
                      files=["[LocalDS_0] new/new_disk0-flat.vmdk"])  # fmt: skip


def test_the_report_is_what_the_hubs_progress_model_takes():
    report = job().hub_report()
    taken = RestoreReport.model_validate(report)
    assert taken.disks[0].verified is True and taken.moref == "vm-9"
    disk = {"disk_id": "disk0", "bytes_written": 4096, "bytes_total": 1 << 20,
            "checksum": SUM, "verified": True}  # fmt: skip
    assert report["disks"][0] == disk


def test_the_node_view_matches_its_openapi_model():
    NodeRestore.model_validate(job().as_dict())


def test_a_record_comes_back_as_the_same_job():
    before = job()
    after = RestoreJob.from_record(before.as_record())
    assert after.as_record() == before.as_record()
    assert after.files == before.files and after.disks["disk0"].expected == SUM
