"""JobManager and the spool: what a restarted node makes of its previous run's records."""

from __future__ import annotations

import pytest

from sendense_tools.backup.executor import BackupOptions
from sendense_tools.node.errors import JobNotFound
from sendense_tools.node.job import DiskState, Job
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.spool import Spool


def manager(spool: Spool) -> JobManager:
    # Nothing listens on port 9: these tests never reach a hub or vCenter.
    reporter = HubReporter("http://127.0.0.1:9", "token")
    return JobManager(lambda: None, BackupOptions(), reporter, ReportOutbox(spool, reporter))


def record(job_id: str, status: str) -> dict:
    job = Job(job_id, "vm0", "vm-1", {"disk0": DiskState("disk0", 1024)}, status=status)
    return job.as_dict()


def test_jobs_the_node_crashed_in_are_failed_and_the_others_kept(tmp_path):
    spool = Spool(tmp_path).open()
    spool.save_job(record("crashed", "running"))
    spool.save_job(record("done", "completed"))
    jobs = manager(spool)
    crashed = jobs.restore()
    assert [j.job_id for j in crashed] == ["crashed"]
    assert jobs.get("crashed").status == "failed"
    assert jobs.get("crashed").error == (
        "node restarted during the backup; removing snapshot sendense-crashed"
    )
    assert jobs.get("done").status == "completed"
    # Until its snapshot is dealt with, a crash during the clean-up finds it again.
    assert spool.jobs()["crashed"]["status"] == "running"


def test_a_job_whose_final_report_was_spooled_had_ended(tmp_path):
    spool = Spool(tmp_path).open()
    spool.save_job(record("ended", "running"))
    final = record("ended", "cancelled")
    spool.save_report("ended", final, {"status": "failed", "error": "cancelled"})
    jobs = manager(spool)
    assert jobs.restore() == []
    assert jobs.get("ended").status == "cancelled"
    assert spool.jobs()["ended"] == final


def test_a_malformed_record_is_skipped(tmp_path):
    spool = Spool(tmp_path).open()
    spool.save_job({"job_id": "broken"})
    spool.save_job(record("fine", "failed"))
    jobs = manager(spool)
    jobs.restore()
    assert list(jobs.jobs) == ["fine"]


async def test_a_cleaned_up_job_is_spooled_for_the_hub_and_closed(tmp_path):
    spool = Spool(tmp_path).open()
    spool.save_job(record("crashed", "running"))
    jobs = manager(spool)
    [job] = jobs.restore()
    jobs.finish_recovered(job, "snapshot sendense-crashed removed")
    why = "node restarted during the backup; snapshot sendense-crashed removed"
    report = spool.reports()["crashed"]["report"]
    assert (report["status"], report["error"]) == ("failed", why)
    assert (spool.jobs()["crashed"]["status"], spool.jobs()["crashed"]["error"]) == ("failed", why)
    assert jobs.outbox.pending() == ["crashed"]
    await jobs.outbox.drain(0)
    assert "crashed" in spool.reports()  # not taken by a hub: it stays for the next start


def test_an_unknown_job_is_a_domain_error(tmp_path):
    jobs = manager(Spool(tmp_path).open())
    with pytest.raises(JobNotFound, match="job nope does not exist on this node"):
        jobs.get("nope")
    with pytest.raises(JobNotFound):
        jobs.cancel("nope")
