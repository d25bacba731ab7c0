"""The node stand-in's half of an incremental: writes into overlay exports, the
node's report of them, and the image as qemu-nbd -r reads it back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

import nbd

from .conftest import MiB, open_export, targets

BLOCK = 4 * MiB


@dataclass
class Disk:
    """A disk the stand-in node copies: its bytes as the VM holds them, and what a copy wrote."""

    capacity: int
    data: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.data = bytearray(self.capacity)


# One write of a copy: (offset, bytes) or (offset, length) for a run of zeroes.
Write = tuple[int, bytes | int]


def apply(disk: Disk, uri: str, tls: dict | None, writes: list[Write]) -> None:
    """Write into the VM's disk and the hub's export alike (zeroes as NBD WRITE_ZEROES)."""
    handle = open_export(uri, tls)
    for offset, what in writes:
        if isinstance(what, int):
            handle.zero(what, offset)
            disk.data[offset : offset + what] = bytes(what)
        else:
            handle.pwrite(what, offset)
            disk.data[offset : offset + len(what)] = what
    handle.flush()
    handle.shutdown()


def areas_of(writes: list[Write]) -> list[list[int]]:
    return sorted([o, w if isinstance(w, int) else len(w)] for o, w in writes)


def changes_digest(disk: Disk, areas: list[list[int]]) -> dict[str, Any]:
    """The node's digest of an incremental (contract): per area its offset and length
    (8 bytes big-endian each), then the area's data as read from the source."""
    h = hashlib.blake2b(digest_size=32)
    for offset, length in areas:
        h.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
        h.update(disk.data[offset : offset + length])
    total = sum(length for _, length in areas)
    return {"algorithm": "blake2b", "areas": len(areas), "bytes": total, "digest": h.hexdigest()}


def blkhash(data: bytes | bytearray) -> dict[str, Any]:
    """The DESIGN's whole-disk checksum, every block hashed (zero blocks included)."""
    outer = hashlib.blake2b(digest_size=32)
    for start in range(0, len(data), BLOCK):
        outer.update(hashlib.blake2b(data[start : start + BLOCK], digest_size=32).digest())
    return {"algorithm": "blake2b", "block_size": BLOCK, "checksum": outer.hexdigest()}


def read_point(qcow2: str) -> bytes:
    """A point's whole disk as `qemu-nbd -r` serves it (through its backing chain)."""
    handle = nbd.NBD()
    handle.connect_systemd_socket_activation(["qemu-nbd", "-r", "-f", "qcow2", qcow2])
    try:
        size = handle.get_size()
        return b"".join(handle.pread(min(BLOCK, size - o), o) for o in range(0, size, BLOCK))
    finally:
        handle.shutdown()


def backing_of(qcow2: str) -> str | None:
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", qcow2],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(info.stdout).get("backing-filename")


def full_writes(seed: int, capacity: int) -> list[Write]:
    return [(0, bytes([seed % 251 + 1]) * MiB), (capacity // 2, os.urandom(2 * MiB))]


def incremental_writes(capacity: int) -> list[Write]:
    """New data, data turned to zeroes, and a write across a 4 MiB block border."""
    return [
        (0, 256 * 1024),
        (BLOCK - 32 * 1024, os.urandom(64 * 1024)),
        (capacity // 2 + 64 * 1024, os.urandom(128 * 1024)),
    ]


CAPACITIES = [8 * MiB, 12 * MiB]


class Vm:
    """A VM of the stand-in node: its disks' bytes, and each backup the node makes of it."""

    def __init__(
        self,
        h,
        name: str = "web01",
        capacities: list[int] = CAPACITIES,
        policy: str | None = None,
    ) -> None:
        self.h = h
        self.name = name
        # The node's policy its backups run for (POST /api/v1/backups "policy").
        self.policy = policy
        self.disks = [Disk(c) for c in capacities]
        self.snapshots = 0
        h.node.vms[name] = list(capacities)

    async def start(self, mode: str | None = None) -> dict[str, Any]:
        body = {"vm": self.name, "node": "node1", "policy": self.policy}
        body |= {"mode": mode} if mode else {}
        code, record = await self.h.call("POST", "/api/v1/backups", body)
        assert code == 201, record
        return record

    async def copy(
        self,
        record: dict[str, Any],
        mode: str,
        reason: str | None = None,
        writes: list[list[Write]] | None = None,
        status: str = "completed",
    ) -> None:
        """Play the node: write every disk (a full: the given writes over zeroes of the
        whole disk; an incremental: only the writes), then PUT the final report."""
        start = self.h.node.start_for(record["id"])
        self.snapshots += 1
        reports = []
        for i, (disk_id, uri) in enumerate(targets(start["nbd_targets"]).items()):
            disk = self.disks[i]
            done = writes[i] if writes else full_writes(i, disk.capacity)
            if mode == "full":
                done = [(0, disk.capacity), *done]
                disk.data[:] = bytes(disk.capacity)
            where = self.h.hub_side(uri)
            await asyncio.to_thread(apply, disk, where, start["nbd_tls"], done)
            report: dict[str, Any] = {
                "disk_id": disk_id,
                "bytes_copied": sum(len(w) for _, w in done if isinstance(w, bytes)),
                "bytes_total": disk.capacity,
                "change_id": f"52 3c 7e aa-{i}/{self.snapshots}",
            }
            if mode == "full":
                report["sha256"] = hashlib.sha256(disk.data).hexdigest()
                report["checksum"] = blkhash(disk.data)
            else:
                areas = areas_of(done)
                report["areas"] = areas
                report["changes"] = changes_digest(disk, areas)
            reports.append(report)
        final = {"status": status, "snapshot": f"snapshot-{self.snapshots}", "mode": mode,
                 "mode_reason": reason, "disks": reports}  # fmt: skip
        if status == "failed":
            final["error"] = "source read failed"
        code, body = await self.h.call(
            "PUT", f"/api/v1/backups/{record['id']}/progress", final, token=self.h.tokens["node1"]
        )
        assert code == 202, body

    async def backup(self, mode: str | None = None, node_mode: str = "full",
                     reason: str | None = None) -> dict[str, Any]:  # fmt: skip
        record = await self.start(mode)
        writes = None
        if node_mode == "incremental":
            writes = [incremental_writes(d.capacity) for d in self.disks]
        await self.copy(record, node_mode, reason, writes)
        return await self.h.wait_status(record["id"])
