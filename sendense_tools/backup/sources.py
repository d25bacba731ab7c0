"""Pick and open the source transport for one disk of a snapshot."""

from __future__ import annotations

import asyncio
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.sources import VddkArgs, file_source, https_source, vddk_source
from sendense_tools.vsphere.connection import (
    VsphereSession,
    fetch_peer_certificate,
    sha1_thumbprint,
    ssl_context,
)
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import DiskInfo, VmInfo, split_datastore_file
from sendense_tools.vsphere.snapshots import SnapshotRef

if TYPE_CHECKING:
    from sendense_tools.backup.executor import BackupOptions


class SourceError(SendenseError):
    pass


def https_verify(session: VsphereSession) -> bool | str:
    """What nbdkit curl verifies vCenter's certificate with.

    With a pinned thumbprint the pin was checked when the session connected;
    curl cannot pin a SHA-1 thumbprint, so it runs without CA verification then.
    """
    p = session.params
    if p.insecure or p.thumbprint:
        return False
    return p.ca_file or True


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
) -> AbstractAsyncContextManager[NbdEndpoint]:
    """The transport's async context manager for `disk` as recorded in `snap`.

    Blocking look-ups (the https URL probe) happen here, before the copy starts,
    so a wrong path fails fast with the disk's file in the message.
    """
    if options.transport == "file":
        return file_source(local_disk_path(options.file_root, vm.name, disk))
    if options.transport == "https":
        cookie = session.session_cookie()
        url = await asyncio.to_thread(
            resolve_disk_url,
            session.endpoint,
            vm.datacenter,
            disk.file,
            cookie,
            ssl_context(session.params),
        )
        return https_source(url, cookie, verify=https_verify(session))
    if options.transport == "vddk":
        p = session.params
        if not options.password_file:
            raise SourceError("the vddk transport needs the vCenter password in a file")
        args = VddkArgs(
            server=session.endpoint.host,
            user=p.user,
            password_file=options.password_file,
            # VDDK always wants the thumbprint; in CA-verified mode take it from the
            # certificate the SOAP session has just verified.
            thumbprint=p.thumbprint
            or sha1_thumbprint(await asyncio.to_thread(fetch_peer_certificate, session.endpoint)),
            vm_moref=vm.moref,
            snapshot_moref=snap.moref,
            file=disk.file,
            libdir=options.vddk_libdir,
            port=None if session.endpoint.port == 443 else session.endpoint.port,
        )
        return vddk_source(args)
    raise SourceError(f"unknown transport {options.transport!r}")
