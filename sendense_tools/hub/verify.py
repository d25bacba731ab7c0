"""The hub's own reading of stored images: each qcow2's SHA-256 against the node's.

One reading serves both the end of a job (`check`: record the digests, list the
problems) and a later `sendense backup verify` (`verify`: the full report).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sendense_tools.hub.store import Store
from sendense_tools.nbd.digest import DigestError, sha256_of_image

# Images hashed at once: each hash is a full read of the image.
HASH_CONCURRENCY = 2


@dataclass(frozen=True)
class DiskCheck:
    disk_id: str
    qcow2_path: str | None
    recorded: str | None
    digest: str | None
    error: str | None

    @property
    def match(self) -> bool:
        if self.digest is None or not self.recorded:
            return False
        return self.recorded.lower() == self.digest

    def problem(self) -> str | None:
        if self.error is not None:
            return f"{self.disk_id}: {self.error}"
        if not self.recorded:
            return f"{self.disk_id}: node reported no sha256"
        if not self.match:
            assert self.digest is not None
            return (
                f"{self.disk_id}: sha256 mismatch (node {self.recorded[:16]}..., "
                f"qcow2 {self.digest[:16]}...)"
            )
        return None


class ImageChecker:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def _hash(self, path: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(sha256_of_image, path)

    async def read(self, job_id: str) -> list[DiskCheck]:
        """Hash every qcow2 of a job; an unreadable image is that disk's error."""
        disks = self.store.disks(job_id)
        digests = await asyncio.gather(
            *(self._hash(d["qcow2_path"]) for d in disks), return_exceptions=True
        )
        checks = []
        for d, digest in zip(disks, digests, strict=True):
            if isinstance(digest, BaseException) and not isinstance(digest, DigestError):
                raise digest
            found = digest if isinstance(digest, str) else None
            error = str(digest) if isinstance(digest, DigestError) else None
            checks.append(DiskCheck(d["disk_id"], d["qcow2_path"], d["sha256"], found, error))
        return checks

    async def check(self, job_id: str) -> list[str]:
        """Hash each qcow2 of a finished job and record it; the problems, one per disk."""
        checks = await self.read(job_id)
        for c in checks:
            if c.digest is not None:
                self.store.set_image_sha(job_id, c.disk_id, c.digest)
        return [p for c in checks if (p := c.problem()) is not None]

    async def verify(self, job_id: str) -> dict[str, Any]:
        """Re-read every qcow2 of a finished backup and compare to the recorded SHA-256."""
        checks = await self.read(job_id)
        results = [
            {
                "disk_id": c.disk_id,
                "qcow2_path": c.qcow2_path,
                "recorded_sha256": c.recorded,
                "sha256": c.digest,
                "match": c.match,
                "error": c.error,
            }
            for c in checks
        ]
        return {"id": job_id, "ok": all(c.match for c in checks), "disks": results}
