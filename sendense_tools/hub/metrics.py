"""Prometheus text exposition of the hub's pool, processes and backups."""

from __future__ import annotations

from sendense_tools.hub.allocator import PoolMetrics

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def nbd_metrics(pool: PoolMetrics, processes: int) -> dict[str, float | int]:
    return {
        "total": pool.total,
        "allocated": pool.allocated,
        "available": pool.available,
        "utilization": round(pool.utilization, 4),
        "qemu_nbd_processes": processes,
    }


def prometheus(pool: PoolMetrics, processes: int, backups: dict[str, int]) -> str:
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float | int]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    gauge("sendense_hub_nbd_ports_total", "NBD ports in the pool.", [("", pool.total)])
    gauge("sendense_hub_nbd_ports_allocated", "NBD ports held by jobs.", [("", pool.allocated)])
    gauge("sendense_hub_nbd_ports_available", "NBD ports free.", [("", pool.available)])
    gauge(
        "sendense_hub_nbd_pool_utilization",
        "Allocated share of the pool (0-1).",
        [("", round(pool.utilization, 4))],
    )
    gauge("sendense_hub_qemu_nbd_processes", "Running qemu-nbd exports.", [("", processes)])
    gauge(
        "sendense_hub_backups",
        "Backup records by status.",
        [(f'{{status="{s}"}}', backups.get(s, 0)) for s in STATUSES],
    )
    return "\n".join(lines) + "\n"
