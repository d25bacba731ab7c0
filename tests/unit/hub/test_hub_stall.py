"""What the node's answer about a stalled job makes of it (stall.judge)."""

from __future__ import annotations

import pytest

from sendense_tools.hub.job import Job
from sendense_tools.hub.nodeclient import NodeClient
from sendense_tools.hub.stall import KEEP_WAITING, judge

SHA = "ab" * 32


def job() -> Job:
    client = NodeClient("n1", "http://127.0.0.1:9", "t", 1.0)
    j = Job(id="j1", node="n1", vm="web", client=client)
    j.exports = {"disk0": None, "disk1": None}  # type: ignore[dict-item]
    return j


def disk(disk_id: str, sha: str | None = SHA) -> dict:
    return {"disk_id": disk_id, "bytes_copied": 512, "bytes_total": 512, "sha256": sha}


def test_a_running_job_keeps_waiting():
    assert judge(job(), {"status": "running", "disks": []}) == KEEP_WAITING


def test_a_completed_job_with_every_checksum_is_its_final_report():
    verdict = judge(job(), {"status": "completed", "snapshot": "s1",
                            "disks": [disk("disk0"), disk("disk1")]})  # fmt: skip
    assert verdict.reason is None
    unset = {"change_id": None, "checksum": None, "changes": None, "areas": None}
    assert verdict.report == {
        "status": "completed",
        "snapshot": "s1",
        "hardware": None,
        "mode": None,
        "mode_reason": None,
        "error": None,
        "disks": [disk("disk0") | unset, disk("disk1") | unset],
    }


def test_an_incremental_the_node_kept_is_taken_with_its_mode_and_changes():
    changes = {"algorithm": "blake2b", "areas": 1, "bytes": 512, "digest": "cd" * 32}
    disks = [
        disk(d, None) | {"change_id": f"52 aa/{i}", "changes": changes, "areas": [[0, 512]]}
        for i, d in enumerate(("disk0", "disk1"))
    ]
    verdict = judge(
        job(), {"status": "completed", "mode": "incremental", "mode_reason": None, "disks": disks}
    )
    assert verdict.reason is None
    assert verdict.report is not None
    assert verdict.report["mode"] == "incremental"
    assert [d["areas"] for d in verdict.report["disks"]] == [[(0, 512)], [(0, 512)]]
    assert [d["change_id"] for d in verdict.report["disks"]] == ["52 aa/0", "52 aa/1"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"status": "failed", "error": "vCenter said no"}, "node n1: vCenter said no"),
        ({"status": "cancelled"}, "node n1: cancelled"),
        (
            {"status": "completed", "disks": [disk("disk0"), disk("disk1", None)]},
            "node n1 reports backup j1 completed, without the checksum of disk1",
        ),
        (
            {"status": "completed", "disks": [disk("disk0")]},
            "node n1 reports backup j1 completed, without the checksum of disk1",
        ),
        (
            {"status": "completed", "disks": [disk("disk0"), disk("disk1"), disk("disk9")]},
            "node n1 reports unknown disks disk9",
        ),
        (
            {"status": "completed", "disks": [disk("disk0", "not-a-sha"), disk("disk1")]},
            "node n1 reported an unusable result: disks.0.sha256: String should match "
            "pattern '^[0-9a-fA-F]{64}$'",
        ),
    ],
)
def test_a_job_the_node_ended_badly_fails_with_the_nodes_reason(answer, reason):
    verdict = judge(job(), answer)
    assert (verdict.reason, verdict.report) == (reason, None)
