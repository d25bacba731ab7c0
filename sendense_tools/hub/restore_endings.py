"""How a restore ends: torn down (failed, cancelled) or finished by the node's final report.

Either way its exports stop and its slots and keys go; the restore record is
all that stays. A restore is `completed` only when the hub itself finds every
disk's read-back checksum equal to the point's: the node's `verified` is not
taken on trust.
"""

from __future__ import annotations

from typing import Any

from sendense_tools.hub.endings import Release
from sendense_tools.hub.job import Job
from sendense_tools.hub.store import loads


def same_checksum(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return False
    keys = ("algorithm", "block_size")
    return all(a.get(k) == b.get(k) for k in keys) and (
        str(a.get("checksum", "")).lower() == str(b.get("checksum", "")).lower()
    )


def compare(disks: list[dict[str, Any]]) -> tuple[dict[str, bool], list[str]]:
    """Each restore disk row's verdict, and the problems in words."""
    verified: dict[str, bool] = {}
    problems = []
    for d in disks:
        expected, got = loads(d["expected_checksum"]), loads(d["checksum"])
        verified[d["disk_id"]] = same_checksum(expected, got)
        if got is None:
            problems.append(f"{d['disk_id']}: the node reported no read-back checksum")
        elif not verified[d["disk_id"]]:
            problems.append(
                f"{d['disk_id']}: read back {got.get('checksum')}, "
                f"the point holds {expected.get('checksum') if expected else None}"
            )
    return verified, problems


class RestoreEndings(Release):
    def conclude(self, job_id: str, status: str, reason: str | None = None) -> None:
        self.store.end_restore(job_id, status, reason)

    async def finish(self, job: Job, report: dict[str, Any]) -> None:
        """The node's final report (already stored): free everything, then judge it."""
        try:
            await self.stop_exports(job)
        finally:
            self.release(job)
        status, error = report["status"], report.get("error")
        if status == "cancelled":
            self.conclude(job.id, "cancelled", f"node: {error or 'cancelled on the node'}")
        elif status == "failed":
            self.conclude(job.id, "failed", f"node: {error or 'node reported failure'}")
        else:
            verified, problems = compare(self.store.restore_disks(job.id))
            self.store.set_verified(job.id, verified)
            if problems:
                self.conclude(job.id, "failed", "; ".join(problems))
            else:
                self.conclude(job.id, "completed")
