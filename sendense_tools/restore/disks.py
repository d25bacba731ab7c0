"""The writing phase: every disk of the point onto the datastore, concurrently.

https: each disk is one streamed `/folder` PUT of `<name>_<disk>-flat.vmdk`
(restore/stream.py: zero extents are made here, never read over the tunnel)
and its small descriptor `<name>_<disk>.vmdk`, attached afterwards. Every file
is recorded in `uploaded` before its PUT starts, so that the clean-up also
deletes a half-written one.

vddk: the disks exist already (create_vm made them thin, attached); each is
written through nbdkit vddk without -r by the backup's copy engine.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sendense_tools.backup.blocking import each_disk, keep_alive, naming_disk, run_stoppable
from sendense_tools.backup.sources import session_vddk_args
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.sources import vddk_target
from sendense_tools.restore.plan import RestoreDisk, RestoreOptions, RestorePlan
from sendense_tools.restore.stream import DiskStream
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.placement import Placement
from sendense_tools.vsphere.upload import descriptor_text, put_file, upload_url

if TYPE_CHECKING:
    from sendense_tools.restore.executor import RestoreHooks


class WriteError(SendenseError):
    """A disk could not be written; the message names it."""


def flat_file(descriptor: str) -> str:
    """ "[ds] dir/name.vmdk" -> "[ds] dir/name-flat.vmdk"."""
    stem = descriptor[: -len(".vmdk")] if descriptor.endswith(".vmdk") else descriptor
    return f"{stem}-flat.vmdk"


def controller_of(hardware: dict[str, Any], disk_id: str) -> str:
    """The recorded controller type of a disk (its descriptor's adapter)."""
    disk = next(d for d in hardware["disks"] if d["disk_id"] == disk_id)
    return next(c["type"] for c in hardware["controllers"] if c["key"] == disk["controller_key"])


async def write_disks(
    session: VsphereSession,
    placement: Placement,
    plan: RestorePlan,
    vm: Any,
    files: dict[str, str],
    options: RestoreOptions,
    hooks: RestoreHooks,
    uploaded: list[str],
    stop: threading.Event,
) -> None:
    loop = asyncio.get_running_loop()

    def progress(disk_id: str) -> Callable[[int], None]:
        def report(written: int) -> None:
            if hooks.on_progress:
                loop.call_soon_threadsafe(hooks.on_progress, disk_id, written)

        return report

    async def one(disk: RestoreDisk) -> None:
        file = files[disk.disk_id]
        try:
            if options.transport == "vddk":
                await _write_vddk(session, plan, disk, file, vm._moId, options,
                                  progress(disk.disk_id))  # fmt: skip
            else:
                await _write_https(session, placement, plan, disk, file,
                                   options, progress(disk.disk_id), uploaded, stop)  # fmt: skip
        except SendenseError as exc:
            raise WriteError(naming_disk(disk.disk_id, exc)) from None

    keepalive = asyncio.create_task(keep_alive(session))
    try:
        await each_disk(plan.disks, one)
    finally:
        keepalive.cancel()


async def _write_https(
    session: VsphereSession,
    placement: Placement,
    plan: RestorePlan,
    disk: RestoreDisk,
    descriptor: str,
    options: RestoreOptions,
    on_progress: Callable[[int], None],
    uploaded: list[str],
    stop: threading.Event,
) -> None:
    cookie = session.session_cookie()
    flat = flat_file(descriptor)
    stream = DiskStream(disk.disk_id, plan.sources[disk.disk_id], disk.capacity,
                        retry_for=options.retry_for, on_progress=on_progress,
                        cancel=stop)  # fmt: skip

    def put_flat() -> None:
        try:
            url = upload_url(session.endpoint, placement.datacenter, flat)
            put_file(session.trust, cookie, url, disk.capacity, stream, stop)
        finally:
            stream.close()

    uploaded.append(flat)
    await run_stoppable(put_flat, stop)
    text = descriptor_text(
        disk.capacity, os.path.basename(flat), controller_of(plan.hardware, disk.disk_id)
    ).encode()
    url = upload_url(session.endpoint, placement.datacenter, descriptor)
    uploaded.append(descriptor)
    await run_stoppable(put_file, stop, session.trust, cookie, url, len(text), [text], stop)


async def _write_vddk(
    session: VsphereSession,
    plan: RestorePlan,
    disk: RestoreDisk,
    file: str,
    vm_moref: str,
    options: RestoreOptions,
    on_progress: Callable[[int], None],
) -> None:
    """Into the thin disk create_vm made, through nbdkit vddk in write mode, with the
    backup's copy engine: the fresh disk reads as zeroes, so zero extents are skipped."""
    args = await asyncio.to_thread(session_vddk_args, session, vm_moref, None, file,
                                   options.password_file, options.vddk_libdir)  # fmt: skip
    async with vddk_target(args) as target:
        await copy_disk(
            disk.disk_id,
            plan.sources[disk.disk_id],
            target,
            connections=options.connections_per_disk,
            on_progress=lambda p: on_progress(p.bytes_done),
            retry_for=options.retry_for,
            target_is_zero=True,
            sha256=False,
        )
