"""The node stand-in's half of an incremental: writes into overlay exports, the
node's report of them, and the image as qemu-nbd -r reads it back."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

import nbd

from .conftest import MiB, open_export

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
