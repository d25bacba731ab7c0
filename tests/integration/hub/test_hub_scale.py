"""Two nodes with 101 disks each in flight at once: each node's own slots 10100.. (its
own sockets), no TCP listener in the slot range, then 503 per node and per hub, all freed."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tests.fixtures.ports import tcp_listeners

from .conftest import MiB, slot_of, targets

pytestmark = pytest.mark.asyncio


def vms_of(h, prefix: str) -> list[str]:
    # 50 two-disk VMs and one single-disk VM: 101 disks.
    for i in range(50):
        h.node.vms[f"{prefix}{i:02d}"] = [4 * MiB, 4 * MiB]
    h.node.vms[f"{prefix}-single"] = [4 * MiB]
    return [vm for vm in h.node.vms if vm.startswith(prefix)]


async def test_two_nodes_each_run_101_disks_on_their_own_slots(make_hub):
    h = await make_hub(ports=101, node2_live=True)
    lo, hi = h.port_range
    requests = [{"vm": vm, "node": "node1"} for vm in vms_of(h, "a")]
    requests += [{"vm": vm, "node": "node2"} for vm in vms_of(h, "b")]
    results = await asyncio.gather(*(h.call("POST", "/api/v1/backups", r) for r in requests))
    codes = [code for code, _ in results]
    assert codes == [201] * len(requests), [b for c, b in results if c != 201][:3]
    socket_dir = Path(h.hub.config.nbd.socket_dir)
    for node in ("node1", "node2"):
        records = [rec for _, rec in results if rec["node"] == node]
        slots = sorted(d["nbd_port"] for rec in records for d in rec["disk_results"])
        assert slots == list(range(lo, hi + 1)), node
        for rec in records:
            # The seed's string form: the node's own forward of each slot.
            start = h.node.start_for(rec["id"])
            assert start["nbd_targets"] == rec["nbd_targets_string"]
            assert start["nbd_tls"] is None
            uris = targets(start["nbd_targets"]).values()
            for d, uri in zip(rec["disk_results"], uris, strict=True):
                assert uri.startswith("nbd://127.0.0.1:")
                assert slot_of(uri) == (d["nbd_port"], d["export_name"])
        sockets = sorted((socket_dir / node).iterdir())
        assert [p.name for p in sockets] == [f"{s}.sock" for s in range(lo, hi + 1)]
        assert all(stat.S_ISSOCK(p.stat().st_mode) for p in sockets)
        assert oct((socket_dir / node).stat().st_mode & 0o7777) == "0o2750"
    assert tcp_listeners(lo, hi) == []

    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["total"], metrics["allocated"], metrics["qemu_nbd_processes"]) == (
        202,
        202,
        202,
    )
    assert metrics["nodes"]["node1"] == metrics["nodes"]["node2"] == {
        "total": 101, "allocated": 101, "available": 0, "utilization": 1.0
    }  # fmt: skip
    # A node sees its own pool and its own slots only.
    _, own = await h.call("GET", "/api/v1/nbd/metrics", token=h.tokens["node2"])
    assert list(own["nodes"]) == ["node2"]
    _, rows = await h.call("GET", "/api/v1/nbd/ports", token=h.tokens["node2"])
    assert len(rows) == 101 and {r["node"] for r in rows} == {"node2"}

    h.node.vms["one-more"] = [MiB]
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "one-more", "node": "node1"})
    assert (code, answer["error"]) == (503, "pool_exhausted")
    assert "node node1's pool: 1 needed, 0 free" in answer["message"]

    # Finishing one of node2's backups writes through its sockets and completes.
    first_b = next(rec for _, rec in results if rec["node"] == "node2")
    await h.finish(first_b["id"], node="node2")
    assert (await h.wait_status(first_b["id"]))["status"] == "completed"

    await asyncio.gather(
        *(
            h.call("POST", f"/api/v1/backups/{rec['id']}/cancel")
            for _, rec in results
            if rec is not first_b
        )
    )
    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (0, 0)
    assert [list((socket_dir / n).iterdir()) for n in ("node1", "node2")] == [[], []]
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "one-more", "node": "node1"})
    assert code == 201, record


async def test_the_hub_wide_export_cap_answers_503_with_how_many_run(make_hub):
    h = await make_hub(ports=8, node2_live=True, max_exports=3)
    h.node.vms["a"] = [MiB, MiB]
    h.node.vms["b"] = [MiB, MiB]
    code, first = await h.call("POST", "/api/v1/backups", {"vm": "a", "node": "node1"})
    assert code == 201, first
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "b", "node": "node2"})
    assert (code, answer["error"]) == (503, "too_many_exports")
    assert answer["message"] == (
        "hub at its export limit: 2 NBD exports needed, 2 of at most 3 already run on this hub"
    )
    assert (answer["running"], answer["max_exports"]) == (2, 3)
    _, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"], metrics["max_exports"]) == (
        2,
        2,
        3,
    )
    assert metrics["nodes"]["node2"]["allocated"] == 0
    _, records = await h.call("GET", "/api/v1/backups?vm=b")
    assert records == []
    await h.call("POST", f"/api/v1/backups/{first['id']}/cancel")
    code, second = await h.call("POST", "/api/v1/backups", {"vm": "b", "node": "node2"})
    assert code == 201, second
