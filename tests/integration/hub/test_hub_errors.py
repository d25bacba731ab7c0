"""Bad input, node failures, per-node visibility and pool exhaustion: clear errors, nothing held."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.fixtures.ports import port_is_listening

from .conftest import MiB

pytestmark = pytest.mark.asyncio


async def held(h) -> tuple[int, int]:
    _, m = await h.call("GET", "/api/v1/nbd/metrics")
    return m["allocated"], m["qemu_nbd_processes"]


async def test_bad_requests_get_the_right_status_and_allocate_nothing(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB, 16 * MiB]
    h.node.vms["big"] = [16 * MiB] * 3
    cases = [
        ({"vm": "web01", "node": "nope"}, 404, "node_not_found"),
        ({"vm": "ghost", "node": "node1"}, 404, "vm_not_found"),
        ({"vm": "", "node": "node1"}, 422, "invalid"),
        ({"node": "node1"}, 422, "invalid"),
        ({"vm": "web01", "node": "node1", "extra": 1}, 422, "invalid"),
        ({"vm": "web01"}, 422, "invalid"),
        ({"vm": "big", "node": "node1"}, 503, "pool_exhausted"),
    ]
    for body, status, code in cases:
        got, answer = await h.call("POST", "/api/v1/backups", body)
        assert (got, answer["error"]) == (status, code), (body, answer)
        assert answer["message"]
    _, answer = await h.call("POST", "/api/v1/backups", {"vm": "big", "node": "node1"})
    assert "3 needed" in answer["message"] and "2 free" in answer["message"]
    assert (answer["needed"], answer["free"]) == (3, 2)

    async with h.session.post(
        h.url + "/api/v1/backups",
        data=b"{not json",
        headers={"Authorization": f"Bearer {h.tokens['admin']}"},
    ) as resp:
        assert resp.status == 400
    assert await held(h) == (0, 0)
    code, records = await h.call("GET", "/api/v1/backups")
    assert (code, records) == (200, [])


async def test_second_backup_of_the_same_vm_gets_409(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["web01"] = [16 * MiB]
    results = await asyncio.gather(
        *(h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"}) for _ in range(3))
    )
    assert sorted(code for code, _ in results) == [201, 409, 409]
    assert await held(h) == (1, 1)


async def test_node_refusal_and_unreachable_node_release_everything(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["web01"] = [16 * MiB, 16 * MiB]
    h.node.start_status = 409
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 409 and "refused" in answer["message"]
    assert await held(h) == (0, 0)
    lo, hi = h.port_range
    assert not any(port_is_listening(p) for p in range(lo, hi + 1))
    _, records = await h.call("GET", "/api/v1/backups?vm=web01")
    assert [r["status"] for r in records] == ["failed"]

    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node2"})
    assert code == 502 and "unreachable" in answer["message"]


async def test_each_node_sees_only_its_own_backups(make_hub):
    h = await make_hub(ports=4)
    h.node.vms["web01"] = [16 * MiB]
    code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01"}, token=h.tokens["node1"])
    assert code == 201 and record["node"] == "node1"
    node2 = h.tokens["node2"]
    code, _ = await h.call("GET", f"/api/v1/backups/{record['id']}", token=node2)
    assert code == 404
    code, listed = await h.call("GET", "/api/v1/backups", token=node2)
    assert (code, listed) == (200, [])
    code, _ = await h.call("POST", f"/api/v1/backups/{record['id']}/cancel", token=node2)
    assert code == 404
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "x", "node": "node1"}, node2)
    assert code == 403, answer
    code, listed = await h.call("GET", "/api/v1/backups", token=h.tokens["node1"])
    assert [r["id"] for r in listed] == [record["id"]]

    async with h.session.get(h.url + "/api/v1/backups") as resp:
        assert resp.status == 401
    code, _ = await h.call("GET", "/api/v1/backups", token="wrong")
    assert code == 401


async def test_progress_reports_are_checked(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    path = f"/api/v1/backups/{record['id']}/progress"
    disk = {"disk_id": "disk0", "bytes_copied": MiB, "bytes_total": 16 * MiB}
    code, body = await h.call("PUT", path, {"status": "running", "disks": [disk]})
    assert code == 200 and body["disk_results"][0]["bytes_copied"] == MiB
    code, _ = await h.call("PUT", path, {"status": "running", "disks": [{**disk, "disk_id": "x"}]})
    assert code == 422
    code, _ = await h.call("PUT", path, {"status": "exploded", "disks": []})
    assert code == 422
    code, _ = await h.call("PUT", path, {"status": "running", "disks": [{**disk, "sha256": "ab"}]})
    assert code == 422
    code, _ = await h.call("PUT", "/api/v1/backups/nope/progress", {"status": "running"})
    assert code == 404


async def test_health_and_prometheus_metrics(make_hub):
    h = await make_hub(ports=3)
    h.node.vms["web01"] = [16 * MiB]
    await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    async with h.session.get(h.url + "/healthz") as resp:
        assert resp.status == 200
    async with h.session.get(
        h.url + "/metrics", headers={"Authorization": f"Bearer {h.tokens['admin']}"}
    ) as resp:
        text = await resp.text()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    # Two nodes of 3 slots each; node1 holds one.
    assert samples["sendense_hub_nbd_ports_total"] == "6"
    assert samples['sendense_hub_nbd_ports_total{node="node2"}'] == "3"
    assert samples["sendense_hub_nbd_ports_allocated"] == "1"
    assert samples['sendense_hub_nbd_ports_allocated{node="node1"}'] == "1"
    assert samples['sendense_hub_nbd_ports_allocated{node="node2"}'] == "0"
    assert samples["sendense_hub_qemu_nbd_processes"] == "1"
    assert samples['sendense_hub_backups{status="running"}'] == "1"


async def test_a_port_taken_by_someone_else_is_never_handed_out(make_hub):
    # The old layout only: a node's socket paths are the hub's alone.
    h = await make_hub(ports=2, listen="tcp")
    lo, _ = h.port_range
    h.node.vms["web01"] = [16 * MiB]
    h.node.vms["web02"] = [16 * MiB]
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", lo)
    try:
        code, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
        assert code == 201 and record["disk_results"][0]["nbd_port"] == lo + 1
        code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web02", "node": "node1"})
        assert code == 503, answer
    finally:
        server.close()
        await server.wait_closed()


async def test_client_hanging_up_mid_start_leaves_a_consistent_job(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    h.node.vm_delay = 1.0
    timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(TimeoutError):
        async with h.session.post(
            h.url + "/api/v1/backups",
            json={"vm": "web01", "node": "node1"},
            headers={"Authorization": f"Bearer {h.tokens['admin']}"},
            timeout=timeout,
        ):
            pass
    async with asyncio.timeout(60):
        while True:
            _, records = await h.call("GET", "/api/v1/backups")
            if records and records[0]["status"] != "pending":
                break
            await asyncio.sleep(0.05)
    assert records[0]["status"] == "running"
    assert await held(h) == (1, 1)
