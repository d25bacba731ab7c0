"""The hub's own reading of stored images: each qcow2's SHA-256 against the node's."""

from __future__ import annotations

import asyncio
from typing import Any

from sendense_tools.hub.store import Store
from sendense_tools.nbd.digest import DigestError, sha256_of_image

# Images hashed at once: each hash is a full read of the image.
HASH_CONCURRENCY = 2


class ImageChecker:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def _hash(self, path: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(sha256_of_image, path)

    async def check(self, job_id: str) -> list[str]:
        """Hash each qcow2 of a finished job and record it; the problems, one per disk."""
        disks = self.store.disks(job_id)
        digests = await asyncio.gather(
            *(self._hash(d["qcow2_path"]) for d in disks), return_exceptions=True
        )
        problems = []
        for d, digest in zip(disks, digests, strict=True):
            if isinstance(digest, DigestError):
                problems.append(f"{d['disk_id']}: {digest}")
                continue
            if isinstance(digest, BaseException):
                raise digest
            self.store.set_image_sha(job_id, d["disk_id"], digest)
            if not d["sha256"]:
                problems.append(f"{d['disk_id']}: node reported no sha256")
            elif d["sha256"].lower() != digest:
                problems.append(
                    f"{d['disk_id']}: sha256 mismatch (node {d['sha256'][:16]}..., "
                    f"qcow2 {digest[:16]}...)"
                )
        return problems

    async def verify(self, job_id: str) -> dict[str, Any]:
        """Re-read every qcow2 of a finished backup and compare to the recorded SHA-256."""
        disks = self.store.disks(job_id)
        digests = await asyncio.gather(
            *(self._hash(d["qcow2_path"]) for d in disks), return_exceptions=True
        )
        results = []
        for d, digest in zip(disks, digests, strict=True):
            if isinstance(digest, BaseException) and not isinstance(digest, DigestError):
                raise digest
            ok = isinstance(digest, str) and bool(d["sha256"]) and d["sha256"].lower() == digest
            results.append(
                {
                    "disk_id": d["disk_id"],
                    "qcow2_path": d["qcow2_path"],
                    "recorded_sha256": d["sha256"],
                    "sha256": digest if isinstance(digest, str) else None,
                    "match": ok,
                    "error": str(digest) if isinstance(digest, DigestError) else None,
                }
            )
        return {"id": job_id, "ok": all(r["match"] for r in results), "disks": results}
