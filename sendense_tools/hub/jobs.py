"""Backup job lifecycle: start (node -> slots -> exports -> node), progress, finish, cancel.

Whatever path a job leaves by (node refusal, qemu-nbd crash, cancel, final
report, hub stop), it goes through `_terminate`, which stops every export,
frees every slot and removes the PSK directory exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.api.server import ApiError
from sendense_tools.errors import SendenseError
from sendense_tools.hub.allocator import PoolMetrics, SlotAllocator
from sendense_tools.hub.config import HubConfig, NodeEntry
from sendense_tools.hub.exports import Export, ExportError, start_export
from sendense_tools.hub.images import ImageError, StorageError, create_image
from sendense_tools.hub.leftovers import is_qemu_nbd, kill_pid
from sendense_tools.hub.nbdtls import write_tls_dir
from sendense_tools.hub.options import ExportOptions
from sendense_tools.hub.sockets import ExportLayout, remove_stale_sockets
from sendense_tools.hub.store import ACTIVE, Store
from sendense_tools.hub.verify import ImageChecker
from sendense_tools.hub.vminfo import check_vm_info, safe_name

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: str
    node: str
    vm: str
    exports: dict[str, Export] = field(default_factory=dict)
    key_dir: Path | None = None
    tls_username: str | None = None
    node_started: bool = False
    # Set once the job is on its way out; later crash reports and cancels are ignored.
    closing: bool = False

    @property
    def psk_file(self) -> Path | None:
        return self.key_dir / "keys.psk" if self.key_dir else None


class JobManager:
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
        self.node_tokens = node_tokens
        self.repository = Path(config.repository.path)
        self.key_root = Path(
            config.nbd.key_dir or Path(config.state.db).resolve().parent / "nbd-keys"
        )
        self._jobs: dict[str, Job] = {}
        self._reserved: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()
        # Start and finish tasks may be cancelled at shutdown; teardown tasks run to the end.
        self._interruptible: set[asyncio.Task] = set()
        self.images = ImageChecker(store)

    # -- helpers --------------------------------------------------------------

    def _spawn(self, coro: Any, interruptible: bool = False) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if interruptible:
            self._interruptible.add(task)
            task.add_done_callback(self._interruptible.discard)
        return task

    def _node_client(self, node: str, timeout: float | None = None) -> ApiClient:
        entry = self.config.nodes[node]
        return ApiClient(
            entry.api_url, self.node_tokens[node], timeout=timeout or self.config.api.node_timeout
        )

    def pools(self, nodes: list[str]) -> dict[str, PoolMetrics]:
        return {node: self.allocator.metrics(node) for node in nodes}

    def qemu_nbd_processes(self) -> int:
        return sum(1 for j in self._jobs.values() for e in j.exports.values() if e.alive)

    def live_pids(self) -> list[int]:
        return [e.pid for j in self._jobs.values() for e in j.exports.values() if e.alive]

    def set_nodes(self, nodes: dict[str, NodeEntry], tokens: dict[str, str]) -> None:
        """Swap the node table and tokens (a reload); a removed node's jobs are cancelled."""
        removed = [j for j in self._jobs.values() if j.node not in nodes and not j.closing]
        self.config = self.config.model_copy(update={"nodes": nodes})
        self.node_tokens = tokens
        for job in removed:
            # Its node is no longer ours to call; the node's copy fails on its own.
            job.node_started = False
            self._spawn(self._terminate(job, "cancelled", f"node {job.node} removed from the hub"))

    # -- start ----------------------------------------------------------------

    async def start_backup(self, vm: str, node: str) -> dict[str, Any]:
        if node not in self.config.nodes:
            raise ApiError(404, "node_not_found", f"node {node!r} is not configured on this hub")
        self._reserve(node, vm)
        # Shielded: a client that hangs up must not abandon half-started exports.
        task = self._spawn(self._start(vm, node), interruptible=True)
        return await asyncio.shield(task)

    def _reserve(self, node: str, vm: str) -> None:
        key = (node, vm)
        active = self.store.active_job_for_vm(node, vm)
        if key in self._reserved or active:
            which = f" (backup {active})" if active else ""
            raise ApiError(409, "vm_busy", f"VM {vm!r} is already being backed up{which}")
        self._reserved.add(key)

    async def _start(self, vm: str, node: str) -> dict[str, Any]:
        reserved = [(node, vm)]
        try:
            info = await self._node_vm(node, vm)
            name = info["name"]
            if name != vm:
                self._reserve(node, name)
                reserved.append((node, name))
            disks = info["disks"]
            job = Job(id=str(uuid.uuid4()), node=node, vm=name)
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

    async def _node_vm(self, node: str, vm: str) -> dict[str, Any]:
        try:
            async with self._node_client(node) as client:
                info = await client.get(f"/api/v1/vms/{_quote(vm)}")
        except ApiCallError as exc:
            if exc.status == 404:
                raise ApiError(404, "vm_not_found", f"node {node}: {exc.message}") from None
            raise ApiError(
                502, "node_error", f"node {node} answered HTTP {exc.status}: {exc.message}"
            ) from None
        except SendenseError as exc:
            raise ApiError(502, "node_unreachable", f"node {node} is unreachable: {exc}") from None
        return check_vm_info(node, vm, info)

    def _plan(self, job: Job, disks: list[dict], slots: list[int]) -> list[dict[str, Any]]:
        folder = self.repository / safe_name(job.vm) / job.id
        specs = []
        for i, (disk, slot) in enumerate(zip(disks, slots, strict=True)):
            specs.append(
                {
                    "disk_id": disk["disk_id"],
                    "capacity": disk["capacity"],
                    "nbd_port": slot,
                    "export_name": f"{safe_name(job.vm)}-{job.id[:8]}-disk{i}",
                    "qcow2_path": str(folder / f"disk{i}.qcow2"),
                }
            )
        if self.config.nbd.tls_psk:
            job.key_dir = self.key_root / job.id
            job.tls_username = f"sendense-{job.id[:8]}"
        # The seed's form: the host and port are the node's forward of each slot.
        host = self.layout.target_host()
        targets = ",".join(
            f"{s['disk_id']}:nbd://{host}:{s['nbd_port']}/{s['export_name']}" for s in specs
        )
        self.store.create_job(
            {
                "id": job.id,
                "vm": job.vm,
                "node": job.node,
                "nbd_targets": targets,
                "tls_username": job.tls_username,
                "key_dir": str(job.key_dir) if job.key_dir else None,
            },
            specs,
        )
        return specs

    async def _bring_up(self, job: Job, specs: list[dict[str, Any]], info: dict) -> None:
        psk: str | None = None
        try:
            if job.key_dir is not None:
                psk = self._write_psk(job)
            await asyncio.gather(
                *(create_image(Path(s["qcow2_path"]), s["capacity"]) for s in specs)
            )
            for s in specs:
                export = await start_export(
                    s["disk_id"],
                    self.layout.address(job.node, s["nbd_port"]),
                    s["export_name"],
                    Path(s["qcow2_path"]),
                    self.export_options,
                    self._on_export_exit(job),
                    tls_dir=job.key_dir,
                )
                job.exports[s["disk_id"]] = export
                self.store.set_pid(job.node, s["nbd_port"], export.pid)
            await asyncio.gather(*(e.wait_ready() for e in job.exports.values()))
            if job.closing:
                raise ExportError(self.store.job_row(job.id)["error"])  # type: ignore[index]
            body = {
                "job_id": job.id,
                "vm": info.get("moref") or job.vm,
                "nbd_targets": self.store.job_row(job.id)["nbd_targets"],  # type: ignore[index]
                "nbd_tls": {"username": job.tls_username, "psk": psk} if psk else None,
            }
            job.node_started = True
            await self._node_start(job, body)
            if job.closing:
                raise ExportError(self.store.job_row(job.id)["error"])  # type: ignore[index]
            self.store.set_status(job.id, "running")
        except ApiError as exc:
            job.node_started = job.node_started and exc.status not in (400, 404, 409)
            await self._terminate(job, "failed", exc.message)
            raise
        except (ExportError, ImageError) as exc:
            await self._terminate(job, "failed", str(exc))
            raise ApiError(502, "export_failed", str(exc)) from None
        except StorageError as exc:
            await self._terminate(job, "failed", str(exc))
            raise
        except BaseException as exc:
            await asyncio.shield(self._terminate(job, "failed", f"start interrupted: {exc!r}"))
            raise

    def _write_psk(self, job: Job) -> str:
        assert job.key_dir is not None and job.tls_username is not None
        psk = secrets.token_hex(32)
        try:
            self.key_root.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_tls_dir(job.key_dir, job.tls_username, psk)
        except OSError as exc:
            where = Path(exc.filename) if exc.filename else job.key_dir
            raise StorageError(where, exc.errno or 0, exc.strerror or str(exc)) from None
        return psk

    async def _node_start(self, job: Job, body: dict[str, Any]) -> None:
        try:
            async with self._node_client(job.node) as client:
                await client.post("/api/v1/backup/start", body)
        except ApiCallError as exc:
            status = exc.status if exc.status in (400, 404, 409) else 502
            raise ApiError(
                status, exc.code, f"node {job.node} refused the backup: {exc.message}"
            ) from None
        except SendenseError as exc:
            raise ApiError(
                502, "node_unreachable", f"node {job.node} is unreachable: {exc}"
            ) from None

    # -- crash, cancel, stop --------------------------------------------------

    def _on_export_exit(self, job: Job):
        def on_exit(export: Export) -> None:
            if job.closing:
                return
            reason = export.exit_reason()
            log.error("backup %s: %s", job.id, reason)
            self._spawn(self._terminate(job, "failed", reason))

        return on_exit

    async def _terminate(self, job: Job, status: str, reason: str | None) -> None:
        if job.closing:
            return
        job.closing = True
        try:
            if job.node_started and status != "completed":
                await self._tell_node_cancel(job)
            await self._stop_exports(job)
        finally:
            self._release(job)
            self.store.set_status(job.id, status, reason)

    async def _stop_exports(self, job: Job) -> None:
        results = await asyncio.gather(
            *(e.stop() for e in job.exports.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("backup %s: stopping an export failed: %r", job.id, result)

    def _release(self, job: Job) -> None:
        self.allocator.release_job(job.id)
        self.store.release_allocations(job.id)
        if job.key_dir is not None:
            shutil.rmtree(job.key_dir, ignore_errors=True)
        self._jobs.pop(job.id, None)

    async def _tell_node_cancel(self, job: Job) -> None:
        # The node may not implement cancel or may be gone: the hub's own
        # cleanup must never depend on it.
        try:
            async with self._node_client(job.node, timeout=5.0) as client:
                await client.post(f"/api/v1/backup/{_quote(job.id)}/cancel")
        except SendenseError as exc:
            log.warning("backup %s: node %s did not take the cancel: %s", job.id, job.node, exc)

    def _active_job(self, job_id: str) -> Job:
        row = self.store.job_row(job_id)
        if row is None:
            raise ApiError(404, "backup_not_found", f"backup {job_id} does not exist")
        job = self._jobs.get(job_id)
        if row["status"] not in ACTIVE or job is None:
            raise ApiError(409, "not_active", f"backup {job_id} is {row['status']}")
        if job.closing:
            raise ApiError(409, "finishing", f"backup {job_id} is already finishing")
        return job

    async def cancel(self, job_id: str, who: str) -> dict[str, Any]:
        job = self._active_job(job_id)
        await asyncio.shield(self._spawn(self._terminate(job, "cancelled", f"cancelled by {who}")))
        return self.store.record(job_id) or {}

    # -- progress and completion ----------------------------------------------

    def progress(self, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
        job = self._active_job(job_id)
        known = set(job.exports)
        for d in report["disks"]:
            if d["disk_id"] not in known:
                raise ApiError(422, "unknown_disk", f"backup {job_id} has no disk {d['disk_id']!r}")
        self.store.record_progress(job_id, report.get("snapshot"), report["disks"])
        if report["status"] in ("completed", "failed"):
            job.closing = True
            self._spawn(self._finish(job, report), interruptible=True)
        return self.store.record(job_id) or {}

    async def _finish(self, job: Job, report: dict[str, Any]) -> None:
        """Flush, stop, free, then compare each qcow2's SHA-256 to the node's."""
        try:
            try:
                flush_errors = await self._flush_all(job)
            finally:
                await asyncio.shield(self._stop_exports(job))
                self._release(job)
            if report["status"] == "failed":
                reason = report.get("error") or "node reported failure"
                self.store.set_status(job.id, "failed", f"node: {reason}")
                return
            if flush_errors:
                self.store.set_status(job.id, "failed", "; ".join(flush_errors))
                return
            mismatches = await self.images.check(job.id)
            if mismatches:
                self.store.set_status(job.id, "failed", "; ".join(mismatches))
            else:
                self.store.set_status(job.id, "completed")
        except BaseException as exc:
            self.store.set_status(job.id, "failed", f"finalizing failed: {exc!r}")
            raise

    async def _flush_all(self, job: Job) -> list[str]:
        results = await asyncio.gather(
            *(e.flush(job.tls_username, job.psk_file) for e in job.exports.values()),
            return_exceptions=True,
        )
        return [
            str(r) if isinstance(r, ExportError) else f"{d}: {r!r}"
            for d, r in zip(job.exports, results, strict=True)
            if isinstance(r, BaseException)
        ]

    async def verify(self, job_id: str) -> dict[str, Any]:
        """Re-read every qcow2 of a finished backup and compare to the recorded SHA-256."""
        row = self.store.job_row(job_id)
        if row is None:
            raise ApiError(404, "backup_not_found", f"backup {job_id} does not exist")
        if row["status"] in ACTIVE:
            raise ApiError(409, "not_finished", f"backup {job_id} is still {row['status']}")
        return await self.images.verify(job_id)

    # -- start-up and shut-down -----------------------------------------------

    async def reconcile(self) -> list[str]:
        """After a restart: stop leftover qemu-nbd, free slots, fail unfinished jobs."""
        nodes = set(self.config.nodes)
        for row in self.store.allocations():
            pid, node, slot = row["pid"], row["node"], row["port"]
            nodes.add(node)
            if pid and is_qemu_nbd(pid, self.layout.qemu_nbd_args(node, slot)):
                log.warning("stopping leftover qemu-nbd pid %d (node %s slot %d)", pid, node, slot)
                await kill_pid(pid)
            self.store.release_slot(node, slot)
        if self.layout.unix:
            remove_stale_sockets(self.layout.socket_dir, sorted(nodes))
        failed = self.store.active_jobs()
        for job_id in failed:
            self.store.set_status(job_id, "failed", "hub restarted")
        if self.key_root.is_dir():
            for child in self.key_root.iterdir():
                shutil.rmtree(child, ignore_errors=True)
        return failed

    async def shutdown(self) -> None:
        """Hub stopping: every job still in flight fails and every qemu-nbd stops."""
        for task in list(self._interruptible):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._terminate(j, "failed", "hub stopped") for j in list(self._jobs.values())),
            return_exceptions=True,
        )
        # Jobs whose own teardown was cut short still hold processes: stop them here.
        for job in list(self._jobs.values()):
            await self._stop_exports(job)
            self._release(job)
        for job_id in self.store.active_jobs():
            self.store.set_status(job_id, "failed", "hub stopped")


def _quote(value: str) -> str:
    return quote(value, safe="")
