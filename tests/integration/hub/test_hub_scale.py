"""101 disks in flight at once on a 101-port pool: unique ports, then 503, then all freed."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.ports import port_is_listening

from .conftest import MiB

pytestmark = pytest.mark.asyncio


async def test_101_concurrent_disks_get_distinct_ports_and_the_102nd_gets_503(make_hub):
    h = await make_hub(ports=101)
    # 50 two-disk VMs and one single-disk VM: 101 disks requested concurrently.
    for i in range(50):
        h.node.vms[f"vm{i:02d}"] = [16 * MiB, 8 * MiB]
    h.node.vms["single"] = [8 * MiB]
    h.node.vms["one-more"] = [8 * MiB]
    requests = [{"vm": vm, "node": "node1"} for vm in h.node.vms if vm != "one-more"]
    results = await asyncio.gather(*(h.call("POST", "/api/v1/backups", r) for r in requests))
    assert [code for code, _ in results] == [201] * len(requests), [
        b for c, b in results if c != 201
    ][:3]
    ports = [d["nbd_port"] for _, rec in results for d in rec["disk_results"]]
    assert len(ports) == 101 and len(set(ports)) == 101
    lo, hi = h.port_range
    assert sorted(ports) == list(range(lo, hi + 1))
    assert all(port_is_listening(p) for p in ports)
    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert metrics == {"total": 101, "allocated": 101, "available": 0, "utilization": 1.0,
                       "qemu_nbd_processes": 101}  # fmt: skip

    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "one-more", "node": "node1"})
    assert code == 503 and "1 needed, 0 free" in answer["message"]

    await asyncio.gather(
        *(h.call("POST", f"/api/v1/backups/{rec['id']}/cancel") for _, rec in results)
    )
    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (0, 0)
    assert not any(port_is_listening(p) for p in ports)
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "one-more", "node": "node1"})
    assert code == 201, record
