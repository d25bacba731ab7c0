"""Pick and open the source transport for one disk of a snapshot."""

from __future__ import annotations

import asyncio
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.sources import VddkArgs, file_source, https_source, vddk_source
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import DiskInfo, VmInfo, split_datastore_file
from sendense_tools.vsphere.snapshots import SnapshotRef
from sendense_tools.vsphere.trust import Trust

if TYPE_CHECKING:
    from sendense_tools.backup.executor import BackupOptions


class SourceError(SendenseError):
    pass


def curl_trust(trust: Trust) -> tuple[bool | str, str | None]:
    """(verify, anchor_pem) for nbdkit curl: the same anchor as the SOAP session's."""
    if trust.mode == "insecure":
        return False, None
    if trust.mode == "pinned":
        return True, trust.anchor_pem
    return trust.ca_file or True, None


def refuse_other_snapshots(transport: str, vm_name: str, others: list[SnapshotRef]) -> None:
    """The https transport reads only while our snapshot is the VM's only one.

    With an older snapshot present, ours records a delta file whose flat base
    holds that older snapshot's data: a backup from it would be stale.
    """
    if transport != "https" or not others:
        return
    names = ", ".join(repr(s.name) for s in others)
    raise SourceError(
        f"VM {vm_name} already has snapshot(s) {names}: the https transport can read only a "
        "VM's sole snapshot (otherwise its disks are deltas over older data); remove them or "
        'use the vddk transport (--transport vddk, [backup] transport = "vddk")'
    )


def local_disk_path(file_root: str, vm_name: str, disk: DiskInfo) -> str:
    """<file_root>/<vm>/<name>-flat.vmdk, or <name>.vmdk when there is no flat file."""
    if not file_root:
        raise SourceError("the file transport needs a file root ([backup].file_root, --file-root)")
    _, path = split_datastore_file(disk.file)
    base = os.path.basename(path)
    stem = base[: -len(".vmdk")] if base.endswith(".vmdk") else base
    for name in (f"{stem}-flat.vmdk", base):
        candidate = os.path.join(file_root, vm_name, name)
        if os.path.isfile(candidate):
            return candidate
    raise SourceError(
        f"{disk.disk_id}: no file {os.path.join(file_root, vm_name, stem + '-flat.vmdk')}"
    )


async def open_source(
    session: VsphereSession,
    vm: VmInfo,
    snap: SnapshotRef,
    disk: DiskInfo,
    options: BackupOptions,
    allocated: list[tuple[int, int]] | None = None,
) -> AbstractAsyncContextManager[NbdEndpoint]:
    """The transport's async context manager for `disk` as recorded in `snap`.

    Blocking look-ups (the https URL probe) happen here, before the copy starts,
    so a wrong path fails fast with the disk's file in the message. `allocated`: the
    areas that hold data, for an https source (which cannot tell holes otherwise).
    """
    if options.transport == "file":
        return file_source(local_disk_path(options.file_root, vm.name, disk))
    if options.transport == "https":
        cookie = session.session_cookie()
        url = await asyncio.to_thread(
            resolve_disk_url, session.trust, vm.datacenter, disk.file, cookie
        )
        verify, anchor_pem = curl_trust(session.trust)
        return https_source(url, cookie, verify=verify, anchor_pem=anchor_pem, allocated=allocated)
    if options.transport == "vddk":
        return vddk_source(await asyncio.to_thread(vddk_args, session, vm, snap, disk, options))
    raise SourceError(f"unknown transport {options.transport!r}")


def vddk_args(
    session: VsphereSession, vm: VmInfo, snap: SnapshotRef, disk: DiskInfo, options: BackupOptions
) -> VddkArgs:
    """nbdkit vddk's arguments to read `disk` as of `snap`."""
    return session_vddk_args(
        session, vm.moref, snap.moref, disk.file, options.password_file, options.vddk_libdir
    )


def session_vddk_args(
    session: VsphereSession,
    vm_moref: str,
    snapshot_moref: str | None,
    file: str,
    password_file: str,
    libdir: str,
) -> VddkArgs:
    """nbdkit vddk's arguments for `file` of `vm_moref` on the session's vCenter: as of a
    snapshot, or (snapshot_moref None) the VM's own disk, to write a restore into.

    Blocking: in CA mode the thumbprint needs a verified connection.
    """
    if not password_file:
        raise SourceError("the vddk transport needs the vCenter password in a file")
    return VddkArgs(
        server=session.endpoint.host,
        user=session.params.user,
        password_file=password_file,
        thumbprint=session.trust.vddk_thumbprint(),
        vm_moref=vm_moref,
        snapshot_moref=snapshot_moref,
        file=file,
        libdir=libdir,
        port=None if session.endpoint.port == 443 else session.endpoint.port,
    )
