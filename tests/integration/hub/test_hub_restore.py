"""Restores through a real hub: real qcow2 points and qemu-nbd, the node's half played by
scripted_node (it reads the read-only exports through their real NBD sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from .chains import Vm, blkhash, read_point
from .restoring import assert_restore_left_nothing, point, restore, scripted_node, wait_restore
from .scripted_node import sources

pytestmark = pytest.mark.asyncio

HARDWARE: dict[str, Any] = {
    "name": "web01", "datacenter": "DC0", "datastore": "LocalDS_0", "folder": "vm/sub",
    "resource_pool": "DC0_C0/Resources", "num_cpus": 2, "cores_per_socket": 1,
    "memory_mb": 2048, "guest_id": "otherLinux64Guest", "firmware": "efi", "version": "vmx-13",
    "controllers": [{"key": 1000, "type": "pvscsi", "bus": 0, "sharing": "noSharing"}],
    "disks": [
        {"disk_id": "disk0", "capacity": 8 << 20, "controller_key": 1000, "unit": 0,
         "thin": True, "file": "[LocalDS_0] web01/web01.vmdk"},
        {"disk_id": "disk1", "capacity": 12 << 20, "controller_key": 1000, "unit": 1,
         "thin": False, "file": "[LocalDS_0] web01/web01_1.vmdk"},
    ],
    "nics": [{"type": "vmxnet3", "network": "VM Network", "connected": True}],
}  # fmt: skip


async def test_a_full_point_restores_bit_identical_and_verified(make_hub, tmp_path):
    h = await make_hub(ports=4, tls_psk=True)
    vm = Vm(h)
    full = await point(h, vm)
    script = scripted_node(h)

    code, started = await restore(h, full["id"])
    assert code == 201, started
    assert started["id"].startswith("r-")
    assert (started["backup_id"], started["node"], started["vm"], started["name"]) == (
        full["id"], "node1", "web01", "web01-restored",
    )  # fmt: skip
    assert started["status"] == "running"
    # Restores hold slots of the node's pool like backups do.
    code, ports = await h.call("GET", "/api/v1/nbd/ports")
    assert {p["job_id"] for p in ports} == {started["id"]} and len(ports) == 2

    record = await wait_restore(h, started["id"])
    assert record["status"] == "completed", record["error"]
    body = script.starts[0]
    read = script.disks[started["id"]]
    for d, result in zip(record["disks"], full["disk_results"], strict=True):
        disk = read[d["disk_id"]]
        assert disk.read_only, "the point must be exported read-only"
        assert disk.data == await asyncio.to_thread(read_point, result["qcow2_path"])
        assert d["expected_checksum"] == result["checksum"] == blkhash(disk.data)
        assert (d["checksum"], d["verified"]) == (result["checksum"], True)
        # Only the data extents crossed the connection (the points are mostly zero).
        assert d["bytes_written"] < d["capacity"] == result["capacity"]
    assert body["nbd_tls"] is not None and body["nbd_tls"]["username"]
    assert set(sources(body["nbd_sources"])) == {"disk0", "disk1"}
    assert body["disks"] == [
        {"disk_id": r["disk_id"], "capacity": r["capacity"], "checksum": r["checksum"]}
        for r in full["disk_results"]
    ]
    # A point recorded before hardware was: defaults from its disks, and the record says so.
    assert body["hardware"]["num_cpus"] == 1 and body["hardware"]["nics"] == []
    assert [(d["disk_id"], d["unit"]) for d in body["hardware"]["disks"]] == [
        ("disk0", 0), ("disk1", 1),
    ]  # fmt: skip
    assert len(record["warnings"]) == 1 and "no recorded hardware" in record["warnings"][0]
    assert record["moref"] == "vm-1001" and record["finished_at"]
    assert script.answers == [200, 202]
    await assert_restore_left_nothing(h, tmp_path, started["id"])
    # The point itself is untouched and still verifies.
    code, verified = await h.call("POST", f"/api/v1/backups/{full['id']}/verify", {})
    assert code == 200 and verified["ok"], verified


async def test_an_incremental_restores_through_its_chain_and_the_older_point_still_does(
    make_hub, tmp_path
):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await point(h, vm)
    full_data = [bytes(d.data) for d in vm.disks]
    inc = await point(h, vm, "incremental")
    assert inc["parent"] == full["id"]
    script = scripted_node(h)

    hold = script.hold = asyncio.Event()
    code, started = await restore(h, inc["id"])
    assert code == 201, started
    # While it runs, neither point of its chain may be pruned.
    assert h.hub.jobs.store.points_in_use() == {full["id"], inc["id"]}
    hold.set()
    record = await wait_restore(h, started["id"])
    assert record["status"] == "completed", record["error"]
    read = script.disks[started["id"]]
    for i, d in enumerate(record["disks"]):
        assert read[d["disk_id"]].data == bytes(vm.disks[i].data) != full_data[i]
        assert d["verified"] is True

    code, older = await restore(h, full["id"], name="web01-older")
    assert code == 201, older
    record = await wait_restore(h, older["id"])
    assert record["status"] == "completed", record["error"]
    for i, disk in enumerate(script.disks[older["id"]].values()):
        assert disk.data == full_data[i]
    await assert_restore_left_nothing(h, tmp_path, older["id"])

    code, listed = await h.call("GET", f"/api/v1/restores?backup={inc['id']}")
    assert code == 200 and [r["id"] for r in listed] == [started["id"]]
    code, listed = await h.call("GET", "/api/v1/restores?status=completed")
    assert [r["id"] for r in listed] == [older["id"], started["id"]]


async def test_hardware_recorded_at_backup_time_is_shown_and_restored(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    record = await vm.start()
    # The node's first report after its snapshot carries the VM's hardware.
    running = {"status": "running", "snapshot": "snapshot-1", "hardware": HARDWARE, "disks": []}
    code, body = await h.call(
        "PUT", f"/api/v1/backups/{record['id']}/progress", running, token=h.tokens["node1"]
    )
    assert code == 200, body
    assert body["hardware"] == HARDWARE
    await vm.copy(record, "full")
    full = await h.wait_status(record["id"])
    assert full["status"] == "completed", full["error"]
    assert full["hardware"] == HARDWARE
    script = scripted_node(h)

    code, started = await restore(h, full["id"], datastore="LocalDS_1", power_on=True)
    assert code == 201, started
    # null: the source VM's, from the recorded hardware; given: as asked.
    assert (started["datastore"], started["folder"], started["resource_pool"]) == (
        "LocalDS_1", "vm/sub", "DC0_C0/Resources",
    )  # fmt: skip
    assert started["power_on"] is True and started["warnings"] == []
    record = await wait_restore(h, started["id"])
    assert record["status"] == "completed", record["error"]
    body = script.starts[0]
    assert body["hardware"] == HARDWARE
    assert (body["name"], body["datastore"], body["folder"], body["resource_pool"]) == (
        "web01-restored", "LocalDS_1", "vm/sub", "DC0_C0/Resources",
    )  # fmt: skip
    assert body["power_on"] is True


async def test_bad_hardware_in_a_report_is_refused_with_the_field_named(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    record = await vm.start()
    for bad, where in (
        ({**HARDWARE, "surprise": 1}, "hardware.surprise"),
        ({**HARDWARE, "nics": [{"type": "token-ring", "network": "x", "connected": True}]},
         "hardware.nics.0.type"),
        ({k: v for k, v in HARDWARE.items() if k != "memory_mb"}, "hardware.memory_mb"),
    ):  # fmt: skip
        report = {"status": "running", "hardware": bad, "disks": []}
        code, body = await h.call(
            "PUT", f"/api/v1/backups/{record['id']}/progress", report, token=h.tokens["node1"]
        )
        assert code == 422, body
        assert body["message"].startswith(f"{where}:"), body
    assert (await h.record(record["id"]))["hardware"] is None


async def test_a_node_restores_its_own_points_only(make_hub, tmp_path):
    h = await make_hub(ports=4, node2_live=True)
    vm = Vm(h)
    full = await point(h, vm)
    scripted_node(h)
    code, body = await restore(h, full["id"], token=h.tokens["node2"])
    assert (code, body["error"]) == (404, "backup_not_found"), body
    assert await h.call("GET", "/api/v1/restores") == (200, [])

    code, started = await restore(h, full["id"], token=h.tokens["node1"])
    assert code == 201, started
    record = await wait_restore(h, started["id"])
    assert record["status"] == "completed", record["error"]
    for method, path in (
        ("GET", f"/api/v1/restores/{started['id']}"),
        ("POST", f"/api/v1/restores/{started['id']}/cancel"),
    ):
        code, body = await h.call(method, path, token=h.tokens["node2"])
        assert (code, body["error"]) == (404, "restore_not_found"), body
    assert await h.call("GET", "/api/v1/restores", token=h.tokens["node2"]) == (200, [])
    code, mine = await h.call("GET", "/api/v1/restores", token=h.tokens["node1"])
    assert code == 200 and [r["id"] for r in mine] == [started["id"]]
    await assert_restore_left_nothing(h, tmp_path, started["id"])
    assert await asyncio.to_thread(Path(full["disk_results"][0]["qcow2_path"]).exists)
