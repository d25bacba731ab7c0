"""`sendense node serve`: the node API until SIGTERM, then a clean stop.

At start, what the previous run left is finished in the background (spooled
final reports, snapshots of crashed jobs: node/recovery.py). On SIGTERM every
running backup is cancelled, its snapshot removed and its final report spooled
and sent before the process exits (bounded: node/stopping.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sendense_tools import daemon
from sendense_tools.api.server import serve_app
from sendense_tools.backup.executor import BackupOptions
from sendense_tools.config import load_config, read_secret
from sendense_tools.nbd import buffers
from sendense_tools.node.api import make_app
from sendense_tools.node.config import NodeConfig
from sendense_tools.node.forwards import TunnelForwards
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.recovery import start_recovery
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.restore_recovery import RESTORE_SPOOL, start_restore_recovery
from sendense_tools.node.restores import RestoreManager
from sendense_tools.node.spool import Spool
from sendense_tools.node.stopping import backups_wait, exit_now
from sendense_tools.restore.plan import RestoreOptions
from sendense_tools.vsphere.connection import VcenterParams

log = logging.getLogger("sendense.node")


def vcenter_params(cfg: NodeConfig) -> VcenterParams:
    v = cfg.vcenter
    return VcenterParams(
        url=v.url,
        user=v.user,
        password=read_secret(v.password_file, "vCenter password"),
        thumbprint=v.thumbprint,
        insecure=v.insecure,
        ca_file=v.ca_file,
    )


def backup_options(cfg: NodeConfig) -> BackupOptions:
    b = cfg.backup
    return BackupOptions(
        transport=b.transport,
        connections_per_disk=b.connections_per_disk,
        quiesce=b.quiesce,
        file_root=b.file_root,
        vddk_libdir=b.vddk_libdir,
        retry_for=b.retry_for,
        password_file=str(Path(cfg.vcenter.password_file).resolve()),
        owner=cfg.node.id,
        snapshot_remove_timeout=b.snapshot_remove_timeout,
        cbt=b.cbt,
    )


def restore_options(cfg: NodeConfig) -> RestoreOptions:
    """Restores write the way backups read: vddk when so configured, else https
    (the file transport has no datastore to write to)."""
    b = cfg.backup
    return RestoreOptions(
        transport="vddk" if b.transport == "vddk" else "https",
        retry_for=b.retry_for,
        connections_per_disk=b.connections_per_disk,
        password_file=str(Path(cfg.vcenter.password_file).resolve()),
        vddk_libdir=b.vddk_libdir,
    )


def build(cfg: NodeConfig) -> tuple[JobManager, RestoreManager]:
    token = read_secret(cfg.hub.token_file or cfg.api.token_file, "hub API token")
    # One budget for the buffers of every disk copy: backups and restores alike.
    buffers.configure(cfg.backup.memory_budget)
    vcenter_params(cfg)  # fail at start, not at the first backup, on a bad password file
    h = cfg.hub
    reporter = HubReporter(h.api_url, token, h.report_interval, h.heartbeat_interval)
    spool = Spool(cfg.node.spool_dir).open()
    outbox = ReportOutbox(spool, reporter, h.report_retry_initial, h.report_retry_max)
    jobs = JobManager(
        lambda: vcenter_params(cfg),
        backup_options(cfg),
        reporter,
        outbox,
        backups_wait(cfg.backup),
        exit_now,
    )
    # Beside the backups' records, never among them: each book reads only its own.
    restore_spool = Spool(Path(cfg.node.spool_dir) / RESTORE_SPOOL).open()
    restore_reporter = reporter.for_restores()
    restore_outbox = ReportOutbox(
        restore_spool, restore_reporter, h.report_retry_initial, h.report_retry_max
    )
    restores = RestoreManager(
        lambda: vcenter_params(cfg),
        restore_options(cfg),
        restore_reporter,
        restore_outbox,
        backups_wait(cfg.backup),
        exit_now,
    )
    return jobs, restores


async def serve(config_path: str) -> None:
    cfg = load_config(config_path, NodeConfig)
    jobs, restores = build(cfg)
    start_recovery(jobs, cfg.hub.report_retry_initial, cfg.hub.report_retry_max)
    start_restore_recovery(restores, cfg.hub.report_retry_initial, cfg.hub.report_retry_max)
    api_token = read_secret(cfg.api.token_file, "API token")
    host, port = cfg.api.listen
    forwards = TunnelForwards(cfg.hub.nbd_host, cfg.hub.nbd_ports)
    runner = await serve_app(make_app(jobs, api_token, forwards, restores), host, port)
    log.info("node API listening on %s:%d", host, port)
    try:
        await daemon.run(_Running(jobs, restores, f"node API on {host}:{port}"), "node")
    finally:
        await runner.cleanup()


class _Running(daemon.Service):
    """The node once its API is up: a stop cancels the backups (snapshots removed, reported)
    and the restores (their VMs and files removed, reported)."""

    def __init__(self, jobs: JobManager, restores: RestoreManager, status: str) -> None:
        self.jobs = jobs
        self.restores = restores
        self.status = status

    async def start(self) -> str:
        return self.status

    async def stop(self) -> None:
        log.info("stopping: cancelling running backups and restores")
        await asyncio.gather(self.jobs.shutdown(), self.restores.shutdown())
