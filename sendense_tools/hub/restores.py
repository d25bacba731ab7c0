"""Restore lifecycle on the hub: check the point, export it read-only, tell the node,
take its reports, end.

Nothing is allocated before the point is known good (completed, with checksums,
its whole chain sound): a broken chain is refused before any slot, export or
node call. From the first slot on, every way out (node refusal, qemu-nbd crash,
cancel, stall, node removed, final report, hub stop) goes through
RestoreEndings, which stops the exports and frees the slots and keys once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sendense_tools.hub.chaincheck import check_chain
from sendense_tools.hub.errors import (
    Finishing,
    NameBusy,
    NodeNotFound,
    NotActive,
    NotCompleted,
    RestoreNotFound,
    UnknownDisk,
)
from sendense_tools.hub.exports import Export
from sendense_tools.hub.job import Job
from sendense_tools.hub.lifecycle import Lifecycle
from sendense_tools.hub.plan import write_psk
from sendense_tools.hub.restore_endings import RestoreEndings
from sendense_tools.hub.restore_plan import (
    DEFAULTS_WARNING,
    default_hardware,
    point_disks,
    restore_body,
    restore_specs,
)
from sendense_tools.hub.restore_schemas import RestoreReport
from sendense_tools.hub.stall import Verdict, ended, watch
from sendense_tools.hub.store import ACTIVE

if TYPE_CHECKING:
    from sendense_tools.hub.jobs import JobManager

log = logging.getLogger(__name__)
PLACES = ("datastore", "folder", "resource_pool")


class RestoreManager(Lifecycle):
    def __init__(self, jobs: JobManager) -> None:
        # The backups' manager holds what restores share with them: the store, the
        # slot allocator, the export layout and options, the node table, the keys.
        super().__init__()
        self.jobs = jobs
        self.store = jobs.store
        self.layout = jobs.layout
        self.options = dataclasses.replace(jobs.export_options, read_only=True)
        self._running: dict[str, Job] = {}
        self.endings = RestoreEndings(jobs.store, jobs.allocator, self._running)

    def exports(self) -> list[Export]:
        return [e for job in self._running.values() for e in job.exports.values() if e.alive]

    # -- start ----------------------------------------------------------------

    async def start(self, point: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """Restore `point` (a visible backup record) as `request` asks (RestoreRequest)."""
        # Shielded: a client that hangs up must not abandon half-started exports.
        return await asyncio.shield(self._spawn(self._start(point, request), interruptible=True))

    async def _start(self, point: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        backup_id = point["id"]
        if point["status"] != "completed":
            raise NotCompleted(backup_id, point["status"])
        disks = point_disks(backup_id, self.store.disks(backup_id))
        tops = await check_chain(self.store, backup_id)
        node = point["node"]
        if node not in self.jobs.nodes:
            raise NodeNotFound(node)
        busy = self.store.active_restore_named(node, request["name"])
        if busy is not None:
            raise NameBusy(request["name"], busy)
        hardware, warnings = point["hardware"], []
        if hardware is None:
            hardware, warnings = default_hardware(point["vm"], disks), [DEFAULTS_WARNING]
        target = {"name": request["name"], "power_on": request["power_on"]}
        target |= {p: request[p] if request[p] is not None else hardware[p] for p in PLACES}
        job = Job(
            id=f"r-{uuid.uuid4()}",
            node=node,
            vm=point["vm"],
            client=self.jobs.node_client(node),
            kind="restore",
        )
        job.starter = asyncio.current_task()
        # PoolExhausted and ExportCapReached go up as they are: the API maps them to 503.
        slots = self.jobs.allocator.allocate(job.id, node, len(disks))
        try:
            specs = restore_specs(job, disks, tops, slots)
            if self.jobs.config.nbd.tls_psk:
                job.key_dir = self.jobs.key_root / job.id
                job.tls_username = f"sendense-{job.id[2:10]}"
            chain = [r["id"] for r in self.store.chain(backup_id)]
            row = {"id": job.id, "backup_id": backup_id, "node": node, "vm": point["vm"],
                   "warnings": warnings, "chain": chain, **target}  # fmt: skip
            self.store.create_restore(row, specs)
        except BaseException:
            self.jobs.allocator.release_job(job.id)
            raise
        self._running[job.id] = job
        await self._bring_up(job, specs, target, hardware)
        return self.store.restore(job.id) or {}

    async def _bring_up(
        self, job: Job, specs: list[dict], target: dict[str, Any], hardware: dict[str, Any]
    ) -> None:
        async def steps() -> None:
            psk = write_psk(self.jobs.key_root, job) if job.key_dir is not None else None
            await self._start_exports(job, specs, self.options)
            host = self.layout.target_host()
            body = restore_body(job, target, hardware, host, specs, psk)
            job.node_started = True
            await job.client.restore_start(body)

        if not await self._guarded_start(job, steps):
            return
        self.store.end_restore(job.id, "running")
        stall = self.jobs.config.jobs.stall_timeout
        job.watcher = self._spawn(watch(job, stall, self._take_final, self._end, judge))

    # -- cancel, reports --------------------------------------------------------

    def _active(self, restore_id: str) -> Job:
        row = self.store.restore_row(restore_id)
        if row is None:
            raise RestoreNotFound(restore_id)
        job = self._running.get(restore_id)
        if row["status"] in ACTIVE and job is not None and job.closing:
            raise Finishing(restore_id, "restore")
        if row["status"] not in ACTIVE or job is None:
            raise NotActive(restore_id, row["status"], "restore")
        return job

    async def cancel(self, restore_id: str, who: str) -> dict[str, Any]:
        job = self._active(restore_id)
        ending = self._end(job, "cancelled", f"cancelled by {who}")
        if ending is not None:
            # wait, not await: a starting restore's task ends with StartAborted, for its caller.
            await asyncio.wait({ending})
        return self.store.restore(restore_id) or {}

    def progress(self, restore_id: str, report: dict[str, Any]) -> dict[str, Any]:
        job = self._active(restore_id)
        if job.ending is not None:
            raise Finishing(restore_id, "restore")
        if not job.node_started:
            raise NotActive(restore_id, "pending", "restore")
        for d in report["disks"]:
            if d["disk_id"] not in job.exports:
                raise UnknownDisk(restore_id, d["disk_id"], "restore")
        job.report_seen()
        if report["status"] == "running":
            self.store.restore_progress(restore_id, report)
        else:
            self._take_final(job, report)
        return self.store.restore(restore_id) or {}

    def _take_final(self, job: Job, report: dict[str, Any]) -> None:
        self.store.restore_progress(job.id, report)
        job.closing = True
        self._spawn(self.endings.finish(job, report))

    # -- nodes, start-up and shut-down ----------------------------------------

    def nodes_removed(self, removed: set[str]) -> None:
        for job in list(self._running.values()):
            if job.node in removed:
                log.warning("restore %s: node %s removed from the hub", job.id, job.node)
                self._end(job, "cancelled", "node removed from the hub")

    def reconcile(self) -> list[str]:
        """After a restart (the backups' reconcile stopped every leftover qemu-nbd and freed
        every slot): unfinished restores fail, and their nodes are told to stop."""
        failed = self.store.active_restores()
        for restore_id in failed:
            self.endings.conclude(restore_id, "failed", "hub restarted")
            row = self.store.restore_row(restore_id)
            if row is not None and row["node"] in self.jobs.nodes:
                self._spawn(self.jobs.node_client(row["node"]).restore_cancel(restore_id))
        return failed

    async def shutdown(self) -> None:
        """Hub stopping: every restore in flight fails, its node is told, its exports stop."""
        for task in list(self._interruptible):
            task.cancel()
        for job in list(self._running.values()):
            self._end(job, "failed", "hub stopped")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Restores whose own teardown was cut short still hold processes: stop them here.
        for job in list(self._running.values()):
            await self.endings.stop_exports(job)
            self.endings.release(job)
        for restore_id in self.store.active_restores():
            self.endings.conclude(restore_id, "failed", "hub stopped")


def judge(job: Job, answer: dict[str, Any]) -> Verdict:
    """The node's `GET /api/v1/restore/{id}` answer as a verdict on a silent restore."""
    verdict = ended(job, answer)
    if verdict is not None:
        return verdict
    # The final report that never arrived, rebuilt from the node's view of the job.
    fields = ("status", "phase", "moref", "error", "warnings", "disks")
    try:
        report = RestoreReport.model_validate({k: answer.get(k) for k in fields if k in answer})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Verdict(
            reason=f"node {job.node} reported an unusable result: {where}: {first['msg']}"
        )
    unknown = sorted({d.disk_id for d in report.disks} - set(job.exports))
    if unknown:
        return Verdict(reason=f"node {job.node} reports unknown disks {', '.join(unknown)}")
    return Verdict(report=report.model_dump())
