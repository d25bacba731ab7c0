"""Input that used to crash the hub: a JSON 4xx naming the problem, nothing held, no 500.

A full or read-only repository is not the client's fault, but the answer still
names the cause: 507 for no space, 503 for a repository it may not write.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.bad_requests import bad_requests
from tests.fixtures.rawhttp import raw_request

from .conftest import MiB, fill, remount_read_only

pytestmark = pytest.mark.asyncio


async def held(h) -> tuple[int, int]:
    _, m = await h.call("GET", "/api/v1/nbd/metrics")
    return m["allocated"], m["qemu_nbd_processes"]


@pytest.mark.parametrize("case", range(len(bad_requests(""))), ids=lambda i: bad_requests("")[i][0])
async def test_malformed_requests_get_a_json_4xx(make_hub, case):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    name, headers, body, status, code = bad_requests(h.tokens["admin"])[case]
    answer = await raw_request(h.url, "POST", "/api/v1/backups", headers, body)
    assert answer.status == status, (name, answer)
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()
    assert error["error"] == code and error["message"]
    assert "\n" not in error["message"] and len(error["message"]) < 300
    assert await held(h) == (0, 0)


async def test_a_count_beyond_64_bits_is_422_and_the_record_survives(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    path = f"/api/v1/backups/{record['id']}/progress"
    disk = {"disk_id": "disk0", "bytes_copied": 10**20, "bytes_total": 16 * MiB}
    code, answer = await h.call("PUT", path, {"status": "running", "disks": [disk]})
    assert code == 422 and answer["error"] == "invalid", answer
    assert "disks.0.bytes_copied" in answer["message"]
    disk["bytes_copied"] = 2**63 - 1
    code, answer = await h.call("PUT", path, {"status": "running", "disks": [disk]})
    assert code == 200 and answer["disk_results"][0]["bytes_copied"] == 2**63 - 1


async def test_a_huge_limit_is_400(make_hub):
    h = await make_hub(ports=1)
    code, answer = await h.call("GET", "/api/v1/backups?limit=" + "9" * 5000)
    assert code == 400 and answer["message"].startswith("limit:"), answer


async def test_a_full_repository_is_507_naming_the_cause(make_hub, small_filesystem):
    h = await make_hub(ports=2, repository=small_filesystem)
    h.node.vms["web01"] = [16 * MiB]
    await asyncio.to_thread(fill, small_filesystem)
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 507, answer
    assert answer["error"] == "insufficient_storage"
    assert "No space left on device" in answer["message"]
    assert str(small_filesystem) in answer["message"]
    assert await held(h) == (0, 0)
    _, records = await h.call("GET", "/api/v1/backups")
    assert [r["status"] for r in records] == ["failed"]
    assert "No space left on device" in records[0]["error"]
    assert h.node.starts == []


async def test_a_read_only_repository_is_503_naming_the_cause(make_hub, small_filesystem):
    h = await make_hub(ports=2, repository=small_filesystem)
    h.node.vms["web01"] = [16 * MiB]
    await asyncio.to_thread(remount_read_only, small_filesystem)
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 503, answer
    assert answer["error"] == "storage_read_only"
    assert "Read-only file system" in answer["message"]
    assert await held(h) == (0, 0)


async def test_a_node_describing_a_disk_beyond_64_bits_is_a_502(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["huge"] = [2**70]
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "huge", "node": "node1"})
    assert code == 502 and answer["error"] == "node_error", answer
    assert "capacity" in answer["message"]
    assert await held(h) == (0, 0)


async def test_a_full_state_database_is_507(make_hub, small_filesystem):
    h = await make_hub(ports=2, state=small_filesystem / "hub.db")
    h.node.vms["web01"] = [16 * MiB]
    await asyncio.to_thread(fill, small_filesystem)
    code, answer = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 507, answer
    assert answer["error"] == "insufficient_storage" and "full" in answer["message"]
    assert await held(h) == (0, 0)


async def test_an_unknown_mode_is_422_and_starts_nothing(make_hub):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    code, answer = await h.call(
        "POST", "/api/v1/backups", {"vm": "web01", "node": "node1", "mode": "differential"}
    )
    assert code == 422 and answer["error"] == "invalid", answer
    assert answer["message"].startswith("mode:"), answer
    assert h.node.starts == [] and await held(h) == (0, 0)


@pytest.mark.parametrize(
    ("disk", "where"),
    [
        ({"areas": [[-1, 512]]}, "disks.0.areas.0.0"),
        ({"areas": [[0, 2**64]]}, "disks.0.areas.0.1"),
        ({"changes": {"algorithm": "md5", "areas": 1, "bytes": 1, "digest": "ab"}},
         "disks.0.changes.algorithm"),
        ({"checksum": {"algorithm": "blake2b", "block_size": 4194304, "checksum": "not hex"}},
         "disks.0.checksum.checksum"),
    ],
)  # fmt: skip
async def test_a_bad_incremental_report_is_422_and_the_job_keeps_running(make_hub, disk, where):
    h = await make_hub(ports=2)
    h.node.vms["web01"] = [16 * MiB]
    _, record = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    path = f"/api/v1/backups/{record['id']}/progress"
    base = {"disk_id": "disk0", "bytes_copied": 0, "bytes_total": 1}
    report = {"status": "running", "mode": "incremental", "disks": [base | disk]}
    code, answer = await h.call("PUT", path, report)
    assert code == 422 and answer["error"] == "invalid", answer
    assert answer["message"].startswith(where), answer
    assert (await h.record(record["id"]))["status"] == "running"
