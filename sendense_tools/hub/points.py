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

from sendense_tools.hub.images import drop_backing
from sendense_tools.hub.store import Store, loads
from sendense_tools.hub.verify import ImageChecker


class PointChecker:
    def __init__(self, store: Store, images: ImageChecker) -> None:
        self.store = store
        self.images = images

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
        changes, areas = loads(disk["changes"]), loads(disk["areas"])
        if not changes or areas is None:
            return f"{name}: node reported no changes digest for an incremental"
        spans = [(int(offset), int(length)) for offset, length in areas]
        checksum, problem = await self.images.check_incremental(
            parent["qcow2_path"], disk["qcow2_path"], disk["capacity"], spans, changes["digest"]
        )
        if problem is not None:
            return f"{name}: {problem}"
        self.store.set_checksum(job_id, name, checksum)
        return None

    async def verify(self, job_id: str) -> dict[str, Any]:
        """`sendense backup verify`: each disk recomputed through its whole chain."""
        return await self.images.verify(job_id)
