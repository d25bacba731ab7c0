"""The hub's own reading of stored images against what the node reported.

A full: the qcow2's block checksum (DESIGN "Checksums") against the node's, and its SHA-256
against the node's while records carry one; the block digests go beside the qcow2 as
`<qcow2>.blocks`. An incremental costs its change: `check_changes` compares the changed
areas as the overlay holds them (read through the chain) with the node's digest, `derive`
takes the parent's `.blocks` and re-hashes only the blocks those areas touch.
`verify_chain` recomputes a point from its whole chain (`sendense backup verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sendense_tools.durable import replace_durably
from sendense_tools.hub.store import Store
from sendense_tools.nbd import blkhash
from sendense_tools.nbd.image import ImageError, open_image

# Images read at once: each is a read of a whole image (or of an incremental's change).
# A VM's disks (three in the lab) verify side by side; past that they wait their turn.
HASH_CONCURRENCY = 4

Areas = list[tuple[int, int]]


def blocks_path(qcow2: str | Path) -> Path:
    return Path(f"{qcow2}.blocks")


def write_blocks(qcow2: str | Path, digests: bytes) -> None:
    """`<qcow2>.blocks`, whole or not at all: a crash leaves the old file or none."""
    target = blocks_path(qcow2)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(digests)
            f.flush()
            os.fsync(f.fileno())
        replace_durably(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_blocks(qcow2: str | Path) -> bytes | None:
    """The stored block digests of a point, or None when it has none."""
    try:
        return blocks_path(qcow2).read_bytes()
    except FileNotFoundError:
        return None


def full_digests(qcow2: str | Path, size: int) -> bytes:
    """Block digests of a point read from its whole chain, stored beside it."""
    return full_digests_and_sha(qcow2, size, sha256=False)[0]


def full_digests_and_sha(qcow2: str | Path, size: int, sha256: bool) -> tuple[bytes, str | None]:
    """`full_digests`, and with `sha256` the point's SHA-256 from the same read."""
    digests, sha = blkhash.image_digests(qcow2, size, sha256)
    write_blocks(qcow2, digests)
    return digests, sha


def verify_chain(qcow2: str | Path, size: int) -> dict:
    """The checksum of a point recomputed from every block of its chain (nothing stored)."""
    return verify_chain_and_sha(qcow2, size, sha256=False)[0]


def verify_chain_and_sha(qcow2: str | Path, size: int, sha256: bool) -> tuple[dict, str | None]:
    """`verify_chain`, and with `sha256` the point's SHA-256 from the same read."""
    digests, sha = blkhash.image_digests(qcow2, size, sha256)
    return blkhash.checksum_of_digests(digests), sha


def check_changes(qcow2: str | Path, areas: Areas, expected_digest: str) -> str | None:
    """What is wrong with the changed areas the overlay holds, or None when they are what
    the node sent (blkhash.changes_digest of both)."""
    try:
        with open_image(qcow2) as image:
            digest = blkhash.changes_digest(image.read, areas)
    except ImageError as e:
        return str(e)
    if digest != expected_digest.lower():
        return (
            f"changed areas differ from the node's (node {expected_digest[:16]}..., "
            f"qcow2 {digest[:16]}...)"
        )
    return None


def derive(parent_qcow2: str | Path, qcow2: str | Path, size: int, areas: Areas) -> dict:
    """The incremental's checksum from its parent's `.blocks` and the blocks `areas` touch,
    re-read through the chain; writes its `.blocks`. A parent without `.blocks` (made
    before they existed) costs a full read instead."""
    parent = read_blocks(parent_qcow2)
    if parent is None:
        return blkhash.checksum_of_digests(full_digests(qcow2, size))
    with open_image(qcow2) as image:
        digests = blkhash.derive_digests(
            parent,
            size,
            blkhash.blocks_touched(areas),
            lambda i: image.read(*blkhash.block_span(size, i)),
        )
    write_blocks(qcow2, digests)
    return blkhash.checksum_of_digests(digests)


def recorded_checksum(disk: dict[str, Any]) -> dict | None:
    text = disk.get("checksum")
    return json.loads(text) if text else None


@dataclass(frozen=True)
class DiskCheck:
    disk_id: str
    qcow2_path: str | None
    recorded: str | None  # the node's sha256
    digest: str | None  # the qcow2's sha256 (when the node sent one)
    error: str | None
    recorded_checksum: dict | None = None
    checksum: dict | None = None

    @property
    def sha256_match(self) -> bool | None:
        if not self.recorded:
            return None
        return self.digest is not None and self.recorded.lower() == self.digest

    @property
    def checksum_match(self) -> bool | None:
        if self.recorded_checksum is None:
            return None
        return self.checksum is not None and self.checksum == self.recorded_checksum

    @property
    def match(self) -> bool:
        found = [m for m in (self.sha256_match, self.checksum_match) if m is not None]
        return self.error is None and bool(found) and all(found)

    def problem(self) -> str | None:
        if self.error is not None:
            return f"{self.disk_id}: {self.error}"
        if self.sha256_match is None and self.checksum_match is None:
            return f"{self.disk_id}: node reported no checksum"
        if self.sha256_match is False:
            assert self.recorded is not None and self.digest is not None
            return (
                f"{self.disk_id}: sha256 mismatch (node {self.recorded[:16]}..., "
                f"qcow2 {self.digest[:16]}...)"
            )
        if self.checksum_match is False:
            assert self.recorded_checksum is not None and self.checksum is not None
            return (
                f"{self.disk_id}: checksum mismatch "
                f"(node {self.recorded_checksum.get('checksum', '')[:16]}..., "
                f"qcow2 {self.checksum['checksum'][:16]}...)"
            )
        return None


class ImageChecker:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def _hash(self, d: dict[str, Any], store_blocks: bool) -> DiskCheck:
        path, size = d["qcow2_path"], d["capacity"]
        expected = recorded_checksum(d)
        sha = checksum = error = None
        want_sha = bool(d["sha256"])
        try:
            async with self._slots:
                if store_blocks:
                    digests, sha = await asyncio.to_thread(
                        full_digests_and_sha, path, size, want_sha
                    )
                    checksum = blkhash.checksum_of_digests(digests)
                else:
                    checksum, sha = await asyncio.to_thread(
                        verify_chain_and_sha, path, size, want_sha
                    )
        except ImageError as e:
            error = str(e)
        return DiskCheck(d["disk_id"], path, d["sha256"], sha, error, expected, checksum)

    async def read(self, job_id: str, *, store_blocks: bool = False) -> list[DiskCheck]:
        """Read every qcow2 of a job whole; an unreadable image is that disk's error."""
        disks = self.store.disks(job_id)
        return list(await asyncio.gather(*(self._hash(d, store_blocks) for d in disks)))

    async def check(self, job_id: str) -> list[str]:
        """Read each qcow2 of a finished full, record its sha256, store its block digests;
        the problems, one per disk."""
        checks = await self.read(job_id, store_blocks=True)
        for c in checks:
            if c.digest is not None:
                self.store.set_image_sha(job_id, c.disk_id, c.digest)
        return [p for c in checks if (p := c.problem()) is not None]

    async def check_incremental(
        self, parent_qcow2: str, qcow2: str, size: int, areas: Areas, changes_digest: str
    ) -> tuple[dict | None, str | None]:
        """An incremental disk: (its derived checksum, None), or (None, the problem)."""
        async with self._slots:
            problem = await asyncio.to_thread(check_changes, qcow2, areas, changes_digest)
            if problem is not None:
                return None, problem
            try:
                return await asyncio.to_thread(derive, parent_qcow2, qcow2, size, areas), None
            except ImageError as e:
                return None, str(e)

    async def verify(self, job_id: str) -> dict[str, Any]:
        """Re-read every qcow2 of a finished backup through its chain and compare to the
        recorded checksum (and SHA-256, where recorded)."""
        checks = await self.read(job_id)
        results = [
            {
                "disk_id": c.disk_id,
                "qcow2_path": c.qcow2_path,
                "recorded_sha256": c.recorded,
                "sha256": c.digest,
                "recorded_checksum": c.recorded_checksum,
                "checksum": c.checksum,
                "match": c.match,
                "error": c.error,
            }
            for c in checks
        ]
        return {"id": job_id, "ok": all(c.match for c in checks), "disks": results}
