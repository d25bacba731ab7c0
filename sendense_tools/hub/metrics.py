"""The hub's slot pools, processes, jobs, VMs, repository and prunes: JSON for the
API, Prometheus text (exposition format 0.0.4) for /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sendense_tools.hub.allocator import PoolMetrics
from sendense_tools.hub.metric_rows import JOB_STATUSES, PruneTotals
from sendense_tools.hub.vmstats import (
    RepositoryFigures,
    VmFigures,
    repository_figures,
    unix_time,
    vm_figures,
)

if TYPE_CHECKING:
    from sendense_tools.hub.jobs import JobManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = dict[str, str]


def _pool(pool: PoolMetrics) -> dict[str, float | int]:
    return {
        "total": pool.total,
        "allocated": pool.allocated,
        "available": pool.available,
        "utilization": round(pool.utilization, 4),
    }


def nbd_metrics(
    hub: PoolMetrics, nodes: dict[str, PoolMetrics], processes: int, max_exports: int
) -> dict:
    return {
        **_pool(hub),
        "qemu_nbd_processes": processes,
        "max_exports": max_exports,
        "nodes": {node: _pool(pool) for node, pool in sorted(nodes.items())},
    }


@dataclass(frozen=True)
class Scrape:
    """Everything one /metrics answer reports, gathered by the handler."""

    hub: PoolMetrics
    nodes: dict[str, PoolMetrics]
    processes: int
    max_exports: int
    jobs: dict[tuple[str, str], int]  # (kind, status) -> records
    vms: list[VmFigures]
    repository: RepositoryFigures | None
    prune: PruneTotals
    now: float  # unix seconds, for the ages


def _escape(value: str) -> str:
    # The three characters the format escapes in a label value; the rest is UTF-8 as is.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Exposition:
    """Metric families in the text format: HELP and TYPE once, then the samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Labels, float | int | None]],
    ) -> None:
        """One family; a sample whose value is unknown (None) is left out, never NaN."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self._lines.append(
                f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"
            )

    def gauge(self, name: str, help_text: str, value: float | int | None) -> None:
        self.family(name, "gauge", help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _pools(out: Exposition, s: Scrape) -> None:
    def per_node(name: str, help_text: str, value) -> None:
        samples = [({}, value(s.hub))]
        samples += [({"node": n}, value(p)) for n, p in sorted(s.nodes.items())]
        out.family(name, "gauge", help_text, samples)

    # The _total of this gauge predates the naming rules; dashboards read it as it is.
    per_node(
        "sendense_hub_nbd_ports_total",
        "NBD slots in the pools (no label: the hub; node: that node's own pool).",
        lambda p: p.total,
    )
    per_node("sendense_hub_nbd_ports_allocated", "NBD slots held by jobs.", lambda p: p.allocated)
    per_node("sendense_hub_nbd_ports_available", "NBD slots free.", lambda p: p.available)
    per_node(
        "sendense_hub_nbd_pool_utilization",
        "Allocated share of the pool (0-1).",
        lambda p: round(p.utilization, 4),
    )
    out.gauge("sendense_hub_qemu_nbd_processes", "Running qemu-nbd exports.", s.processes)
    out.gauge(
        "sendense_hub_nbd_max_exports",
        "Hub-wide cap on concurrent qemu-nbd exports.",
        s.max_exports,
    )


def _jobs(out: Exposition, s: Scrape) -> None:
    out.family(
        "sendense_hub_backups",
        "gauge",
        'Backup records by status (sendense_jobs{kind="backup"}).',
        [({"status": st}, s.jobs[("backup", st)]) for st in JOB_STATUSES],
    )
    out.family(
        "sendense_jobs",
        "gauge",
        "Backup and restore records by kind and status.",
        [({"kind": k, "status": st}, n) for (k, st), n in sorted(s.jobs.items())],
    )


def _vms(out: Exposition, s: Scrape) -> None:
    def each(value) -> list[tuple[Labels, float | int | None]]:
        return [({"node": v.node, "vm": v.vm, "policy": v.policy}, value(v)) for v in s.vms]

    def each_vm(value) -> list[tuple[Labels, float | int | None]]:
        return [({"node": v.node, "vm": v.vm}, value(v)) for v in s.vms]

    def age(v: VmFigures) -> float | None:
        return None if v.last_finished_at is None else max(0.0, s.now - v.last_finished_at)

    out.family(
        "sendense_vm_last_backup_timestamp_seconds",
        "gauge",
        "When the VM's newest completed restore point finished (unix time).",
        each(lambda v: v.last_finished_at),
    )
    out.family(
        "sendense_vm_last_backup_age_seconds",
        "gauge",
        "Seconds since the VM's newest completed restore point finished.",
        each(age),
    )
    out.family(
        "sendense_vm_backup_max_age_seconds",
        "gauge",
        "The age its policy allows: schedule interval + randomized delay + 1 h"
        " (VMs of a policy configured on this hub only).",
        each(lambda v: v.max_age),
    )
    out.family(
        "sendense_vm_restore_points",
        "gauge",
        "Completed restore points the hub keeps of the VM.",
        each_vm(lambda v: v.points),
    )
    out.family(
        "sendense_vm_stored_bytes",
        "gauge",
        "Bytes the VM's completed restore points' qcow2 files hold on disk.",
        each_vm(lambda v: v.stored_bytes),
    )


def _repository(out: Exposition, s: Scrape) -> None:
    r = s.repository
    for name, help_text, value in (
        ("size", "Size of the repository's filesystem.", r and r.size),
        ("used", "Bytes used on the repository's filesystem (by anything).", r and r.used),
        ("free", "Bytes the hub may still write on the repository's filesystem.", r and r.free),
    ):
        out.gauge(f"sendense_repository_{name}_bytes", help_text, value)


def _prune(out: Exposition, s: Scrape) -> None:
    p = s.prune
    out.family(
        "sendense_prune_runs_total",
        "counter",
        "Finished prune runs by status, dry runs apart.",
        [
            ({"status": st, "dry_run": "true" if dry else "false"}, n)
            for (st, dry), n in sorted(p.runs.items())
        ],
    )
    out.family(
        "sendense_prune_points_removed_total",
        "counter",
        "Restore points removed by prunes (merged or deleted).",
        [({}, p.points_removed)],
    )
    out.family(
        "sendense_prune_merged_bytes_total",
        "counter",
        "Allocated bytes of overlays committed into the points they were merged into.",
        [({}, p.merged_bytes)],
    )
    out.gauge(
        "sendense_prune_last_run_timestamp_seconds",
        "When the newest finished prune run (dry runs too) ended (unix time).",
        unix_time(p.last_finished_at),
    )


async def gather(jobs: JobManager, node: str | None, pool_nodes: list[str]) -> Scrape:
    """One scrape's figures: a caller's node (None: every node) scopes the jobs and
    VMs; the SQL runs on the loop (the store's rule), the stats in a thread."""
    rows = jobs.store.completed_disks(node)
    policies = {n: entry.policies for n, entry in jobs.nodes.items()}
    vms, repository = await asyncio.gather(
        asyncio.to_thread(vm_figures, rows, policies),
        asyncio.to_thread(repository_figures, str(jobs.repository.root)),
    )
    return Scrape(
        hub=jobs.allocator.hub_metrics(list(jobs.nodes)),
        nodes=jobs.pools(pool_nodes),
        processes=jobs.qemu_nbd_processes(),
        max_exports=jobs.allocator.max_exports,
        jobs=jobs.store.job_counts(node),
        vms=vms,
        repository=repository,
        prune=jobs.store.prune_totals(),
        now=time.time(),
    )


def prometheus(scrape: Scrape) -> str:
    out = Exposition()
    for section in (_pools, _jobs, _vms, _repository, _prune):
        section(out, scrape)
    return out.text()
