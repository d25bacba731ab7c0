"""The hub's slot pools, processes and backups: JSON for the API, Prometheus text."""

from __future__ import annotations

from sendense_tools.hub.allocator import PoolMetrics

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


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


def prometheus(
    hub: PoolMetrics,
    nodes: dict[str, PoolMetrics],
    processes: int,
    max_exports: int,
    backups: dict[str, int],
) -> str:
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float | int]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    def per_node(name: str, help_text: str, hub_value: float | int, value) -> None:
        samples = [("", hub_value)]
        samples += [(f'{{node="{n}"}}', value(p)) for n, p in sorted(nodes.items())]
        gauge(name, help_text, samples)

    per_node(
        "sendense_hub_nbd_ports_total",
        "NBD slots in the pools (no label: the hub; node: that node's own pool).",
        hub.total,
        lambda p: p.total,
    )
    per_node(
        "sendense_hub_nbd_ports_allocated",
        "NBD slots held by jobs.",
        hub.allocated,
        lambda p: p.allocated,
    )
    per_node(
        "sendense_hub_nbd_ports_available",
        "NBD slots free.",
        hub.available,
        lambda p: p.available,
    )
    per_node(
        "sendense_hub_nbd_pool_utilization",
        "Allocated share of the pool (0-1).",
        round(hub.utilization, 4),
        lambda p: round(p.utilization, 4),
    )
    gauge("sendense_hub_qemu_nbd_processes", "Running qemu-nbd exports.", [("", processes)])
    gauge(
        "sendense_hub_nbd_max_exports",
        "Hub-wide cap on concurrent qemu-nbd exports.",
        [("", max_exports)],
    )
    gauge(
        "sendense_hub_backups",
        "Backup records by status.",
        [(f'{{status="{s}"}}', backups.get(s, 0)) for s in STATUSES],
    )
    return "\n".join(lines) + "\n"
