"""Backup job lifecycle: start (node -> slots -> exports -> node), progress, finish, cancel.

Whatever path a job leaves by (node refusal, qemu-nbd crash, cancel, stall,
node removed, final report, hub stop), it goes through `_teardown` or `_finish`,
which stop every export, free every slot and remove the PSK directory exactly
once. While a job is still starting, an end asked for from outside cancels the
starting task instead, so that nothing it was starting outlives the job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

from sendense_tools.hub.allocator import PoolMetrics, SlotAllocator
from sendense_tools.hub.config import HubConfig, NodeEntry
from sendense_tools.hub.endings import Endings
from sendense_tools.hub.errors import (
    BackupNotFound,
    Finishing,
    NodeNotFound,
    NotActive,
    NotFinished,
    UnknownDisk,
    UnknownPolicy,
    VmBusy,
)
from sendense_tools.hub.exports import Export
from sendense_tools.hub.images import create_image
from sendense_tools.hub.job import Job
from sendense_tools.hub.lifecycle import Lifecycle
from sendense_tools.hub.nodeclient import NodeClient
from sendense_tools.hub.options import ExportOptions
from sendense_tools.hub.parent import choose_parent
from sendense_tools.hub.plan import disk_specs, job_row, start_body, write_psk
from sendense_tools.hub.points import PointChecker
from sendense_tools.hub.prune import Pruner
from sendense_tools.hub.reconcile import remove_key_dirs, stop_leftovers
from sendense_tools.hub.repository import Repository
from sendense_tools.hub.restores import RestoreManager
from sendense_tools.hub.schemas import reported_mode
from sendense_tools.hub.settle import Settler
from sendense_tools.hub.sockets import ExportLayout
from sendense_tools.hub.stall import watch
from sendense_tools.hub.store import ACTIVE, FINALIZING, STOPPED, Store
from sendense_tools.hub.verify import ImageChecker

log = logging.getLogger(__name__)


class JobManager(Lifecycle):
    def __init__(
        self,
        config: HubConfig,
        store: Store,
        allocator: SlotAllocator,
        export_options: ExportOptions,
        node_tokens: dict[str, str],
    ) -> None:
        self.config = config
        self.store = store
        self.allocator = allocator
        self.layout = ExportLayout(config.nbd.listen, config.nbd.socket_dir, config.nbd.bind)
        self.export_options = export_options
        self.nodes: dict[str, NodeEntry] = dict(config.nodes)
        self.node_tokens = node_tokens
        self.repository = Repository(config.repository.path)
        self.key_root = Path(
            config.nbd.key_dir or Path(config.state.db).resolve().parent / "nbd-keys"
        )
        self._jobs: dict[str, Job] = {}
        self._reserved: set[tuple[str, str]] = set()
        super().__init__()
        self.points = PointChecker(store, ImageChecker(store))
        self.endings = Endings(store, allocator, self.repository, self.points, self._jobs)
        self.settler = Settler(store, self.endings, lambda c: self._spawn(c, interruptible=True))
        self.restores = RestoreManager(self)
        self.pruner = Pruner(self)

    # -- helpers --------------------------------------------------------------

    def node_client(self, node: str) -> NodeClient:
        entry = self.nodes[node]
        return NodeClient(node, entry.api_url, self.node_tokens[node], self.config.api.node_timeout)

    def set_nodes(self, nodes: dict[str, NodeEntry], node_tokens: dict[str, str]) -> None:
        """The reloaded node table; a removed node's running jobs are cancelled."""
        removed = set(self.nodes) - set(nodes)
        # Swapped whole: the API's authenticator reads `node_tokens` at each request.
        self.nodes = dict(nodes)
        self.node_tokens = dict(node_tokens)
        for job in list(self._jobs.values()):
            if job.node in removed:
                log.warning("backup %s: node %s removed from the hub", job.id, job.node)
                self._end(job, "cancelled", "node removed from the hub")
        self.restores.nodes_removed(removed)

    def pools(self, nodes: list[str]) -> dict[str, PoolMetrics]:
        return {node: self.allocator.metrics(node) for node in nodes}

    def _live_exports(self) -> list[Export]:
        mine = [e for j in self._jobs.values() for e in j.exports.values() if e.alive]
        return mine + self.restores.exports()

    def qemu_nbd_processes(self) -> int:
        return len(self._live_exports())

    def live_pids(self) -> list[int]:
        return [e.pid for e in self._live_exports()]

    # -- start ----------------------------------------------------------------

    async def start_backup(
        self, vm: str, node: str, mode: str = "auto", policy: str | None = None
    ) -> dict[str, Any]:
        if node not in self.nodes:
            raise NodeNotFound(node)
        if policy is not None and policy not in self.nodes[node].policies:
            raise UnknownPolicy(node, policy)
        self._reserve(node, vm)
        # Shielded: a client that hangs up must not abandon half-started exports.
        task = self._spawn(self._start(vm, node, mode, policy), interruptible=True)
        return await asyncio.shield(task)

    def _reserve(self, node: str, vm: str) -> None:
        key = (node, vm)
        active = self.store.active_job_for_vm(node, vm)
        if key in self._reserved or active:
            raise VmBusy(vm, active)
        self._reserved.add(key)

    async def _start(self, vm: str, node: str, mode: str, policy: str | None) -> dict[str, Any]:
        reserved = [(node, vm)]
        try:
            client = self.node_client(node)
            info = await client.describe_vm(vm)
            name = info["name"]
            if name != vm:
                self._reserve(node, name)
                reserved.append((node, name))
            disks = info["disks"]
            # Before any slot: an impossible incremental starts nothing (NoParent).
            chosen = choose_parent(self.store, node, name, disks, mode)
            job = Job(
                id=str(uuid.uuid4()),
                node=node,
                vm=name,
                client=client,
                mode=mode,
                plan=chosen,
                policy=policy,
            )
            job.starter = asyncio.current_task()
            # PoolExhausted and ExportCapReached go up as they are: the API maps them to 503.
            slots = self.allocator.allocate(job.id, node, len(disks))
            try:
                specs = self._plan(job, disks, slots)
            except BaseException:
                self.allocator.release_job(job.id)
                raise
            self._jobs[job.id] = job
            await self._bring_up(job, specs, info)
            return self.store.record(job.id) or {}
        finally:
            for key in reserved:
                self._reserved.discard(key)

    def _plan(self, job: Job, disks: list[dict], slots: list[int]) -> list[dict[str, Any]]:
        specs = disk_specs(self.repository, job, disks, slots)
        if self.config.nbd.tls_psk:
            job.key_dir = self.key_root / job.id
            job.tls_username = f"sendense-{job.id[:8]}"
        self.store.create_job(job_row(job, self.layout.target_host(), specs), specs)
        return specs

    async def _bring_up(self, job: Job, specs: list[dict[str, Any]], info: dict) -> None:
        async def steps() -> None:
            psk = write_psk(self.key_root, job) if job.key_dir is not None else None
            parent = job.plan.parent
            await asyncio.gather(
                *(
                    create_image(
                        Path(s["qcow2_path"]),
                        s["capacity"],
                        Path(parent.qcow2[s["disk_id"]]) if parent else None,
                    )
                    for s in specs
                )
            )
            await self._start_exports(job, specs, self.export_options)
            targets = self.store.job_row(job.id)["nbd_targets"]  # type: ignore[index]
            body = start_body(job, info.get("moref") or job.vm, targets, psk)
            job.node_started = True
            await job.client.start(body)

        if not await self._guarded_start(job, steps):
            return
        self.store.set_status(job.id, "running")
        watching = watch(job, self.config.jobs.stall_timeout, self._take_final, self._end)
        job.watcher = self._spawn(watching, interruptible=True)

    # -- crash, cancel, stop --------------------------------------------------

    def _active_job(self, job_id: str) -> Job:
        row = self.store.job_row(job_id)
        if row is None:
            raise BackupNotFound(job_id)
        job = self._jobs.get(job_id)
        if row["status"] in ACTIVE and (row["phase"] == FINALIZING or (job and job.closing)):
            raise Finishing(job_id)
        if row["status"] not in ACTIVE or job is None:
            raise NotActive(job_id, row["status"])
        return job

    async def cancel(self, job_id: str, who: str) -> dict[str, Any]:
        job = self._active_job(job_id)
        ending = self._end(job, "cancelled", f"cancelled by {who}")
        if ending is not None:
            # wait, not await: a starting job's task ends with StartAborted, for its caller.
            await asyncio.wait({ending})
        return self.store.record(job_id) or {}

    # -- progress and completion ----------------------------------------------

    def progress(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        if self.settler.take_final(job_id, report):
            return self.store.record(job_id) or {}
        job = self._active_job(job_id)
        if job.ending is not None:
            raise Finishing(job_id)
        if not job.node_started:
            raise NotActive(job_id, "pending")
        known = set(job.exports)
        for d in report["disks"]:
            if d["disk_id"] not in known:
                raise UnknownDisk(job_id, d["disk_id"])
        job.report_seen()
        if report["status"] == "running":
            self.store.record_progress(
                job_id, report.get("snapshot"), report["disks"], mode=reported_mode(report),
                hardware=report.get("hardware"),
            )  # fmt: skip
        else:
            self._take_final(job, report)
        return self.store.record(job_id) or {}

    def _take_final(self, job: Job, report: dict[str, Any]) -> None:
        # A completed copy is the node's to keep no more: persisted before the
        # flush, so that a hub restart from here on verifies it again.
        phase = FINALIZING if report["status"] == "completed" else None
        self.store.record_progress(
            job.id, report.get("snapshot"), report["disks"], phase, reported_mode(report),
            report.get("hardware"),
        )  # fmt: skip
        job.closing = True
        self._spawn(self.endings.finish(job, report), interruptible=True)

    async def verify(self, job_id: str) -> dict[str, Any]:
        """Recompute a finished backup's checksums from its whole chain and compare."""
        row = self.store.job_row(job_id)
        if row is None:
            raise BackupNotFound(job_id)
        if row["status"] in ACTIVE:
            raise NotFinished(job_id, row["status"])
        return await self.points.verify(job_id)

    # -- start-up and shut-down -----------------------------------------------

    async def reconcile(self) -> list[str]:
        """After a restart: stop leftover qemu-nbd, free slots, verify again the jobs the
        last run was finalizing, settle with their nodes those it left copying, and fail
        the rest. The failed ids."""
        await stop_leftovers(self.store, self.layout, set(self.nodes), self.repository.root)
        remove_key_dirs(self.key_root)
        clients = {node: self.node_client(node) for node in self.nodes}
        return self.settler.after_restart(self.store.active_jobs(), clients)

    async def shutdown(self) -> None:
        """Hub stopping: every qemu-nbd stops. A job still starting fails; one its node
        was copying is left for the next start to settle with the node (it may finish
        its copy meanwhile); a job being finalized is left so, for the next start to verify."""
        for task in list(self._interruptible):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for job in list(self._jobs.values()):
            if job.closing:
                continue
            job.closing = True
            row = self.store.job_row(job.id)
            if job.node_started and row is not None and row["status"] == "running":
                self.store.set_phase(job.id, STOPPED)
            else:
                self._spawn(self.endings.teardown(job, "failed", "hub stopped"))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Left jobs, and jobs whose own teardown was cut short, still hold processes.
        for job in list(self._jobs.values()):
            await self.endings.stop_exports(job)
            self.endings.release(job)
        for job_id in self.store.active_jobs():
            if self.store.phase(job_id) not in (FINALIZING, STOPPED):
                self.endings.conclude(job_id, "failed", "hub stopped")
