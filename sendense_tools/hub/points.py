"""A finished point checked against what the node reported, and checked again later.

A full (or a full the node copied into overlays, which then stands alone) goes
to ImageChecker; an incremental's overlay is checked at the node's areas
against the node's digest, and its whole-disk checksum derived from its
parent's block digests, so the check costs the change, not the capacity.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sendense_tools.hub import verify as checks
from sendense_tools.hub.images import drop_backing
from sendense_tools.hub.store import Store
from sendense_tools.hub.verify import HASH_CONCURRENCY, ImageChecker


class PointChecker:
    def __init__(self, store: Store, images: ImageChecker) -> None:
        self.store = store
        self.images = images
        self._slots = asyncio.Semaphore(HASH_CONCURRENCY)

    async def check(self, job_id: str) -> list[str]:
        """Verify a finished job and record its checksums; the problems, one per disk."""
        row = self.store.job_row(job_id)
        assert row is not None
        if row["parent"] is not None and row["mode"] == "incremental":
            return await self._check_incremental(job_id, row["parent"])
        if row["parent"] is not None:
            await self._stand_alone(job_id, row["mode"])
        return await self.images.check(job_id)

    async def _stand_alone(self, job_id: str, mode: str | None) -> None:
        """The node made a full into the overlays: every cluster was written (zeroes as
        zero writes), so the backing link goes without reading anything."""
        for d in self.store.disks(job_id):
            await drop_backing(Path(d["qcow2_path"]))
        self.store.set_parent(job_id, None)
        if mode is None:
            self.store.set_mode(job_id, "full", "the node did not report its mode")

    async def _check_incremental(self, job_id: str, parent_id: str) -> list[str]:
        parents = {d["disk_id"]: d for d in self.store.disks(parent_id)}
        disks = self.store.disks(job_id)
        found = await asyncio.gather(
            *(self._check_disk(job_id, d, parents.get(d["disk_id"])) for d in disks)
        )
        return [p for p in found if p is not None]

    async def _check_disk(
        self, job_id: str, disk: dict[str, Any], parent: dict[str, Any] | None
    ) -> str | None:
        name = disk["disk_id"]
        if parent is None:
            return f"{name}: parent point has no such disk"
        changes, areas = disk["changes"], disk["areas"]
        if not changes or areas is None:
            return f"{name}: node reported no changes digest for an incremental"
        spans = [(int(offset), int(length)) for offset, length in areas]
        async with self._slots:
            problem = await asyncio.to_thread(
                checks.check_changes, disk["qcow2_path"], spans, changes["digest"]
            )
            if problem:
                return f"{name}: {problem}"
            checksum = await asyncio.to_thread(
                checks.derive, parent["qcow2_path"], disk["qcow2_path"], disk["capacity"], spans
            )
        self.store.set_checksum(job_id, name, checksum)
        return None

    async def verify(self, job_id: str) -> dict[str, Any]:
        """`sendense backup verify`: each disk's checksum recomputed from the whole chain;
        a record from before checksums is checked by its SHA-256 as it was made."""
        disks = self.store.disks(job_id)
        if not any(d["checksum"] for d in disks):
            return await self.images.verify(job_id)
        results = await asyncio.gather(*(self._verify_disk(d) for d in disks))
        return {"id": job_id, "ok": all(r["match"] for r in results), "disks": list(results)}

    async def _verify_disk(self, disk: dict[str, Any]) -> dict[str, Any]:
        recorded = disk["checksum"]
        found, error = None, None
        try:
            async with self._slots:
                found = await asyncio.to_thread(
                    checks.verify_chain, disk["qcow2_path"], disk["capacity"]
                )
        except (OSError, RuntimeError) as exc:
            error = str(exc)
        return {
            "disk_id": disk["disk_id"],
            "qcow2_path": disk["qcow2_path"],
            "recorded_sha256": disk["sha256"],
            "sha256": None,
            "recorded_checksum": recorded,
            "checksum": found,
            "match": found is not None and recorded is not None and _same(found, recorded),
            "error": error,
        }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["algorithm"], a["block_size"], a["checksum"].lower()) == (
        b["algorithm"],
        b["block_size"],
        b["checksum"].lower(),
    )
