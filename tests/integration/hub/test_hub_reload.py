"""JobManager.set_nodes (the hub's SIGHUP reload): the new node table takes effect at once."""

from __future__ import annotations

import pytest

from sendense_tools.hub.config import NodeEntry

from .conftest import MiB, qemu_nbd_under, write_secret

pytestmark = pytest.mark.asyncio


async def test_a_removed_nodes_jobs_are_cancelled_and_the_others_run_on(make_hub, tmp_path):
    h = await make_hub(ports=4, node2_live=True)
    h.node.vms.update({"a01": [16 * MiB, 16 * MiB], "b01": [16 * MiB]})
    code, a = await h.call("POST", "/api/v1/backups", {"vm": "a01", "node": "node1"})
    assert code == 201, a
    code, b = await h.call("POST", "/api/v1/backups", {"vm": "b01", "node": "node2"})
    assert code == 201, b
    jobs = h.hub.jobs
    node3_token = "node3-" + "c" * 16
    h.node.other_tokens.append(node3_token)
    node3 = NodeEntry(api_url=h.node.url, token_file=write_secret(tmp_path / "n3", node3_token))

    jobs.set_nodes(
        {"node1": jobs.nodes["node1"], "node3": node3},
        {"node1": h.tokens["node1"], "node3": node3_token},
    )

    removed = await h.wait_status(b["id"])
    assert (removed["status"], removed["error"]) == ("cancelled", "node removed from the hub")
    assert b["id"] in h.node.cancels  # told through the client the job started with
    _, rows = await h.call("GET", "/api/v1/nbd/ports")
    assert {r["node"] for r in rows} == {"node1"}
    assert len(qemu_nbd_under(tmp_path)) == 2  # node1's two exports only
    # The removed node's token is refused at once; the new node's is taken.
    assert (await h.call("GET", "/api/v1/backups", token=h.tokens["node2"]))[0] == 401
    code, body = await h.call("POST", "/api/v1/backups", {"vm": "b01"}, token=node3_token)
    assert code == 201 and body["node"] == "node3", body
    code, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert set(metrics["nodes"]) == {"node1", "node3"}

    # node1's backup never noticed.
    assert (await h.record(a["id"]))["status"] == "running"
    await h.finish(a["id"])
    final = await h.wait_status(a["id"])
    assert final["status"] == "completed", final["error"]
