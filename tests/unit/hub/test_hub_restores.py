"""What the node's answer about a silent restore makes of it (restores.judge)."""

from __future__ import annotations

from sendense_tools.hub.job import Job
from sendense_tools.hub.restores import judge
from sendense_tools.hub.stall import KEEP_WAITING

CHECKSUM = {"algorithm": "blake2b", "block_size": 4 << 20, "checksum": "ab" * 32}


def job() -> Job:
    restore = Job(id="r-1", node="n1", vm="web", client=None, kind="restore")  # type: ignore[arg-type]
    restore.exports = {"disk0": None}  # type: ignore[dict-item]
    return restore


def disk(**extra) -> dict:
    return {"disk_id": "disk0", "bytes_written": 4, "bytes_total": 9, "checksum": CHECKSUM} | extra


def test_running_keeps_waiting_and_an_ended_restore_fails_with_the_nodes_reason():
    assert judge(job(), {"status": "running"}) == KEEP_WAITING
    verdict = judge(job(), {"status": "failed", "error": "datastore full"})
    assert (verdict.reason, verdict.report) == ("node n1: datastore full", None)
    assert judge(job(), {"status": "cancelled"}).reason == "node n1: cancelled"


def test_a_completed_restore_the_node_kept_is_its_final_report():
    answer = {"job_id": "r-1", "status": "completed", "moref": "vm-9", "disks": [disk()]}
    verdict = judge(job(), answer)
    assert verdict.reason is None
    assert verdict.report == {
        "status": "completed", "phase": None, "moref": "vm-9", "error": None, "warnings": [],
        "disks": [disk(verified=None)],
    }  # fmt: skip


def test_an_unusable_or_foreign_result_fails_naming_what():
    bad = judge(job(), {"status": "completed", "disks": [disk(bytes_written=-1)]})
    assert bad.reason is not None
    assert bad.reason.startswith("node n1 reported an unusable result: disks.0.bytes_written:")
    other = judge(job(), {"status": "completed", "disks": [disk(disk_id="disk7")]})
    assert other.reason == "node n1 reports unknown disks disk7"
