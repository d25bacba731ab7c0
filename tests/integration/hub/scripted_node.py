"""scripted_node: the node's restore protocol played by a script, NOT the node.

A real aiohttp handler (mounted on the hub tests' node stand-in) answering
`POST /api/v1/restore/start`, `GET /api/v1/restore/{id}` and `.../cancel` as the
contract's section 3 says. Its "restore" reads each disk from the hub's
read-only export through the real NBD socket (data extents only, as the node
does: zero extents are not read), keeps the bytes it would have written, hashes
them and PUTs its reports to the hub. No vCenter is involved: the node's own
tests cover that half.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nbd
from aiohttp import web

from .chains import blkhash

READ = 4 << 20


@dataclass
class Disk:
    """What the scripted node got of one disk."""

    data: bytes
    read_only: bool
    # Bytes that crossed the NBD connection (zero extents are not read).
    bytes_read: int


def read_disk(uri: str, tls: dict | None) -> Disk:
    """The whole disk of an export, reading only the extents that are not zero."""
    handle = nbd.NBD()
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    psk = None
    try:
        if tls is not None:
            fd, psk = tempfile.mkstemp()
            os.write(fd, f"{tls['username']}:{tls['psk']}\n".encode())
            os.close(fd)
            handle.set_tls(nbd.TLS_REQUIRE)
            handle.set_tls_username(tls["username"])
            handle.set_tls_psk_file(psk)
        handle.connect_uri(uri)
    finally:
        if psk is not None:
            os.unlink(psk)
    size = handle.get_size()
    data = bytearray(size)
    sent = 0
    offset = 0
    extents: list[int] = []

    def got(context: str, start: int, entries: list[int], err: Any) -> int:
        if context == nbd.CONTEXT_BASE_ALLOCATION:
            extents.extend(entries)
        return 0

    while offset < size:
        extents.clear()
        handle.block_status(min(size - offset, 1 << 30), offset, got)
        for length, flags in zip(extents[::2], extents[1::2], strict=True):
            length = min(length, size - offset)
            if not flags & nbd.STATE_ZERO:
                for at in range(offset, offset + length, READ):
                    n = min(READ, offset + length - at)
                    data[at : at + n] = handle.pread(n, at)
                sent += length
            offset += length
    read_only = bool(handle.is_read_only())
    handle.shutdown()
    return Disk(bytes(data), read_only, sent)


def sources(nbd_sources: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in nbd_sources.split(","))


@dataclass
class ScriptedNode:
    """The script: what to answer and how to report. `where` maps a source as the node's
    forward names it to what that forward leads to on the hub (the slot's socket)."""

    hub_url: str
    token: str
    where: Callable[[str], str]
    # Answer every start with this (status, code, message) instead of starting.
    refuse: tuple[int, str, str] | None = None
    # Set: the restore waits for it before it reads anything.
    hold: asyncio.Event | None = None
    # Disks whose read-back checksum the script reports wrong (and `verified` true).
    corrupt: set[str] = field(default_factory=set)
    # Report completed at the end (else the script stays silent, a stalled node).
    report: bool = True
    starts: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    disks: dict[str, dict[str, Disk]] = field(default_factory=dict)
    # The node's own view of each restore (GET /api/v1/restore/{id}); absent: 404.
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if request.method == "POST" and tail == "start":
            return await self._start(await request.json())
        restore_id, _, action = tail.partition("/")
        if request.method == "POST" and action == "cancel":
            self.cancels.append(restore_id)
            for task in self._tasks:
                task.cancel()
            return web.json_response({"job_id": restore_id, "status": "cancelled"})
        if request.method == "GET" and not action and restore_id in self.views:
            return web.json_response({"job_id": restore_id, **self.views[restore_id]})
        return web.json_response(
            {"error": "job_not_found", "message": f"no restore {restore_id}"}, status=404
        )

    async def _start(self, body: dict[str, Any]) -> web.Response:
        if self.refuse is not None:
            status, code, message = self.refuse
            return web.json_response({"error": code, "message": message}, status=status)
        self.starts.append(body)
        task = asyncio.create_task(self._restore(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"job_id": body["job_id"], "status": "running"}, status=201)

    async def _put(self, restore_id: str, report: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.hub_url}/api/v1/restores/{restore_id}/progress"
        async with (
            aiohttp.ClientSession() as session,
            session.put(url, json=report, headers=headers) as resp,
        ):
            self.answers.append(resp.status)

    async def _restore(self, body: dict[str, Any]) -> None:
        restore_id = body["job_id"]
        try:
            self.reading.set()
            if self.hold is not None:
                await self.hold.wait()
            got = {}
            for disk_id, uri in sources(body["nbd_sources"]).items():
                got[disk_id] = await asyncio.to_thread(read_disk, self.where(uri), body["nbd_tls"])
            self.disks[restore_id] = got
            disks = []
            for disk_id, disk in got.items():
                checksum = blkhash(disk.data)
                if disk_id in self.corrupt:
                    checksum["checksum"] = "0" * 64
                disks.append({"disk_id": disk_id, "bytes_written": disk.bytes_read,
                              "bytes_total": len(disk.data), "checksum": checksum,
                              "verified": True})  # fmt: skip
            final = {"status": "completed", "phase": None, "moref": "vm-1001", "error": None,
                     "warnings": [], "disks": disks}  # fmt: skip
            self.views[restore_id] = final
            if self.report:
                running = {**final, "status": "running", "phase": "verifying"}
                await self._put(restore_id, running)
                await self._put(restore_id, final)
        finally:
            self.done.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
