"""Incrementals through a real hub: parent choice, overlays on the parent's qcow2,
the node's fall-back to a full, and what a failed incremental leaves.

The tests that finish an incremental need the engine's hub/verify.py functions
(check_changes, derive, verify_chain) and its `.blocks` files of fulls.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from .chains import (
    CAPACITIES,
    Disk,
    Vm,
    backing_of,
    blkhash,
    incremental_writes,
    read_point,
)
from .conftest import MiB

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[3]


def qcow2s(record: dict[str, Any]) -> list[str]:
    return [d["qcow2_path"] for d in record["disk_results"]]


async def test_an_incremental_is_an_overlay_on_its_parent_holding_the_parents_data_and_changes(
    make_hub,
):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    assert full["status"] == "completed", full["error"]
    assert (full["mode"], full["mode_reason"], full["parent"]) == (
        "full", "no previous completed point", None,
    )  # fmt: skip
    # No parent: a full whatever the mode, in the body an older node takes too.
    assert {"mode", "change_ids"} & set(h.node.start_for(full["id"])) == set()
    full_data = [bytes(d.data) for d in vm.disks]

    record = await vm.start()
    assert record["parent"] == full["id"]
    start = h.node.start_for(record["id"])
    assert start["mode"] == "auto"
    assert start["change_ids"] == {d["disk_id"]: d["change_id"] for d in full["disk_results"]}
    for overlay, base in zip(qcow2s(record), qcow2s(full), strict=True):
        assert await asyncio.to_thread(backing_of, overlay) == base
    writes = [incremental_writes(d.capacity) for d in vm.disks]
    await vm.copy(record, "incremental", writes=writes)
    inc = await h.wait_status(record["id"])
    assert inc["status"] == "completed", inc["error"]
    assert (inc["mode"], inc["parent"]) == ("incremental", full["id"])
    for i, d in enumerate(inc["disk_results"]):
        assert d["change_id"] == f"52 3c 7e aa-{i}/2"
        assert await asyncio.to_thread(read_point, d["qcow2_path"]) == vm.disks[i].data
        # Derived from the parent's block digests, equal to hashing the whole disk.
        assert d["checksum"] == blkhash(vm.disks[i].data)
    for i, path in enumerate(qcow2s(full)):
        assert await asyncio.to_thread(read_point, path) == full_data[i]

    code, verified = await h.call("POST", f"/api/v1/backups/{inc['id']}/verify", {})
    assert code == 200 and verified["ok"], verified


async def test_disks_that_changed_make_a_full_with_the_reason_and_no_overlay(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    assert full["status"] == "completed", full["error"]
    h.node.vms[vm.name] = [CAPACITIES[0], CAPACITIES[1] + MiB]
    vm.disks[1] = Disk(CAPACITIES[1] + MiB)
    record = await vm.start()
    assert record["parent"] is None
    assert record["mode"] == "full"
    grown = CAPACITIES[1] + MiB
    assert record["mode_reason"] == (
        f"disk1 was resized since point {full['id']} ({CAPACITIES[1]} -> {grown} bytes)"
    )
    assert "change_ids" not in h.node.start_for(record["id"])
    for path in qcow2s(record):
        assert await asyncio.to_thread(backing_of, path) is None
    await vm.copy(record, "full")
    assert (await h.wait_status(record["id"]))["status"] == "completed"


async def test_an_incremental_that_cannot_be_made_is_refused_and_starts_nothing(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    code, body = await h.call(
        "POST", "/api/v1/backups", {"vm": vm.name, "node": "node1", "mode": "incremental"}
    )
    assert code == 409, body
    assert body == {
        "error": "no_parent",
        "message": "no incremental backup of VM 'web01' possible: no previous completed point",
    }
    assert h.node.starts == []
    assert await h.call("GET", "/api/v1/backups") == (200, [])
    code, metrics = await h.call("GET", "/api/v1/nbd/metrics")
    assert (metrics["allocated"], metrics["qemu_nbd_processes"]) == (0, 0)
    assert not (Path(h.hub.config.repository.path) / vm.name).exists()


async def test_a_failed_point_is_never_a_parent_and_leaves_its_parent_intact(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    assert full["status"] == "completed", full["error"]
    before = [await asyncio.to_thread(Path(p).read_bytes) for p in qcow2s(full)]
    blocks = sorted(Path(qcow2s(full)[0]).parent.iterdir())

    failed = await vm.start()
    assert failed["parent"] == full["id"]
    writes = [incremental_writes(d.capacity) for d in vm.disks]
    await vm.copy(failed, "incremental", writes=writes, status="failed")
    failed = await h.wait_status(failed["id"])
    assert failed["status"] == "failed"
    assert not Path(qcow2s(failed)[0]).parent.exists()
    assert sorted(Path(qcow2s(full)[0]).parent.iterdir()) == blocks
    assert [await asyncio.to_thread(Path(p).read_bytes) for p in qcow2s(full)] == before

    # The failed point is not the next one's parent: the completed full is.
    record = await vm.start(mode="incremental")
    assert record["parent"] == full["id"]
    assert h.node.start_for(record["id"])["change_ids"] == {
        d["disk_id"]: d["change_id"] for d in full["disk_results"]
    }
    code, _ = await h.call("POST", f"/api/v1/backups/{record['id']}/cancel", {})
    assert code == 200
    assert [await asyncio.to_thread(Path(p).read_bytes) for p in qcow2s(full)] == before


async def test_a_full_the_node_made_into_overlays_stands_alone(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    assert full["status"] == "completed", full["error"]
    record = await vm.start()
    assert record["parent"] == full["id"]
    # The node fell back (CBT reset): the whole capacity, zero runs as zero writes.
    await vm.copy(record, "full", reason="change id of disk0 is from another CBT epoch",
                  writes=[[(MiB, b"\x07" * MiB)], [(3 * MiB, b"\x09" * MiB)]])  # fmt: skip
    final = await h.wait_status(record["id"])
    assert final["status"] == "completed", final["error"]
    assert (final["mode"], final["mode_reason"], final["parent"]) == (
        "full", "change id of disk0 is from another CBT epoch", None,
    )  # fmt: skip
    for i, path in enumerate(qcow2s(final)):
        assert await asyncio.to_thread(backing_of, path) is None
        assert await asyncio.to_thread(read_point, path) == vm.disks[i].data


async def test_a_full_asked_for_is_no_overlay_even_with_a_parent(make_hub):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    assert full["status"] == "completed", full["error"]
    record = await vm.start(mode="full")
    assert (record["mode"], record["mode_reason"], record["parent"]) == (
        "full", "full requested", None,
    )  # fmt: skip
    assert {"mode", "change_ids"} & set(h.node.start_for(record["id"])) == set()
    for path in qcow2s(record):
        assert await asyncio.to_thread(backing_of, path) is None
    # The node had no previous point to go on: the hub's reason stands.
    await vm.copy(record, "full", reason="no previous point")
    final = await h.wait_status(record["id"])
    assert (final["status"], final["mode"], final["mode_reason"]) == (
        "completed", "full", "full requested",
    )  # fmt: skip


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sendense_tools", "backup", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "300"},  # rich folds no backup id
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_backup_show_lists_the_chain_and_verify_recomputes_it(make_hub, tmp_path):
    h = await make_hub(ports=4)
    vm = Vm(h)
    full = await vm.backup()
    inc = await vm.backup(node_mode="incremental")
    assert (full["status"], inc["status"]) == ("completed", "completed"), inc["error"]
    hub = ("--hub", h.url, "--token-file", str(tmp_path / "admin-token"))

    rc, out, err = await cli("show", inc["id"], *hub, "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["id"] == inc["id"]
    assert [(p["id"], p["mode"]) for p in shown["chain"]] == [
        (full["id"], "full"),
        (inc["id"], "incremental"),
    ]
    assert [p["bytes_copied"] for p in shown["chain"]] == [
        sum(d["bytes_copied"] for d in r["disk_results"]) for r in (full, inc)
    ]
    assert shown["chain"][1]["checksums"] == {
        d["disk_id"]: d["checksum"] for d in inc["disk_results"]
    }
    rc, out, err = await cli("show", inc["id"], *hub)
    assert rc == 0, err
    assert full["id"] in out and "incremental" in out

    rc, out, err = await cli("verify", inc["id"], *hub, "--json")
    assert rc == 0, err
    assert json.loads(out)["ok"] is True
