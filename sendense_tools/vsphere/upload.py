"""Datastore file uploads: one streamed HTTP PUT to vCenter's /folder URL, and VMDK descriptors.

A restore writes each disk as a flat file plus the small descriptor that makes it a
disk; vCenter then attaches the pair as it is. The PUT goes over the session's pinned
(or CA-checked) TLS context like every other connection that carries the cookie.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import socket
import ssl
import threading
from collections.abc import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

from sendense_tools.vsphere.datastore import file_url
from sendense_tools.vsphere.params import VsphereError
from sendense_tools.vsphere.trust import Trust

__all__ = ["UploadCancelled", "descriptor_text", "put_file", "upload_url"]

# The PUT URL of a datastore file is its /folder URL, without the -flat rewriting of reads.
upload_url = file_url

TIMEOUT = 300.0
# How often a running PUT looks at its cancel event while a send may be blocked.
CANCEL_POLL = 0.1
SECTOR = 512

# ddb.adapterType by controller type. It chooses the descriptor's geometry only; the
# controller a disk sits on is the VM's. SATA disks take the IDE geometry, as VMware's
# tools write it; NVMe has no adapter type of its own and takes the SCSI one.
ADAPTERS = {
    "lsilogic": "lsilogic",
    "lsilogic-sas": "lsisas1068",
    "pvscsi": "pvscsi",
    "buslogic": "buslogic",
    "nvme": "lsilogic",
    "sata": "ide",
    "ide": "ide",
}
# (heads, sectors per track, most cylinders) of the BIOS geometry.
GEOMETRY = {"ide": (16, 63, 16383)}
SCSI_GEOMETRY = (255, 63, 65535)


class UploadCancelled(VsphereError):
    """The upload stopped because its cancel event was set."""


def _shown(url: str) -> str:
    """ "[ds] path" of a /folder URL, for messages (no host, no query)."""
    parts = urlsplit(url)
    ds = parse_qs(parts.query).get("dsName", ["?"])[0]
    return f"[{ds}] {unquote(parts.path.removeprefix('/folder/'))}"


def _status_error(file: str, status: int, reason: str) -> VsphereError:
    if status in (401, 403):
        return VsphereError(f"vCenter refused the upload of {file} (HTTP {status} {reason})")
    if status == 404:
        return VsphereError(f"upload of {file}: datacenter or datastore not found (HTTP 404)")
    if status >= 500:
        return VsphereError(f"vCenter failed to store {file} (HTTP {status} {reason})")
    return VsphereError(f"upload of {file}: vCenter answered HTTP {status} {reason}")


def _early_answer(conn: http.client.HTTPSConnection) -> tuple[int, str] | None:
    """The status a server sent when it stopped reading the body: a refusal (401, 507...)
    tells more than the broken pipe the sender saw."""
    try:
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None
    return resp.status, resp.reason


def _watch(conn: http.client.HTTPSConnection, cancel: threading.Event, done: threading.Event):
    """Shut the socket down when `cancel` is set, so that a send blocked on it returns."""
    while not done.wait(CANCEL_POLL):
        if cancel.is_set():
            sock = conn.sock
            if sock is not None:
                # The plain socket's shutdown: SSLSocket's own drops its TLS state under
                # the thread that is sending.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            return


def put_file(
    trust: Trust,
    cookie: str,
    url: str,
    length: int,
    chunks: Iterable[bytes],
    cancel: threading.Event | None = None,
    timeout: float = TIMEOUT,
) -> None:
    """Stream `chunks` (exactly `length` bytes in all) as the body of one PUT of `url`.

    Raises a one-line VsphereError naming the file for a refused certificate, an HTTP
    error or a body of the wrong length, and UploadCancelled soon after `cancel` is set.
    """
    file = _shown(url)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise VsphereError(f"upload of {file}: {parts.scheme}:// is not a vCenter https URL")
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=trust.context, timeout=timeout
    )
    done = threading.Event()
    watcher = None
    if cancel is not None:
        watcher = threading.Thread(target=_watch, args=(conn, cancel, done), name="put-cancel")
    try:
        conn.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
        conn.putheader("Cookie", cookie)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if watcher is not None:
            watcher.start()
        sent = 0
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                raise UploadCancelled(f"upload of {file} cancelled after {sent} bytes")
            sent += len(chunk)
            if sent > length:
                raise VsphereError(f"upload of {file}: more data than its {length} bytes")
            conn.send(chunk)
        if sent != length:
            raise VsphereError(f"upload of {file}: {sent} bytes of data, {length} announced")
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201, 204):
            raise _status_error(file, resp.status, resp.reason)
    except ssl.SSLCertVerificationError as exc:
        raise trust.refusal("datastore upload", exc) from None
    except (OSError, http.client.HTTPException) as exc:
        if cancel is not None and cancel.is_set():
            raise UploadCancelled(f"upload of {file} cancelled") from None
        early = _early_answer(conn)
        if early is not None and early[0] not in (200, 201, 204):
            raise _status_error(file, *early) from None
        raise VsphereError(f"upload of {file} failed: {exc}") from None
    finally:
        done.set()
        if watcher is not None and watcher.is_alive():
            watcher.join()
        conn.close()


def _geometry(adapter: str, sectors: int) -> tuple[int, int, int]:
    heads, per_track, most = GEOMETRY.get(adapter, SCSI_GEOMETRY)
    return min(sectors // (heads * per_track), most), heads, per_track


def descriptor_text(capacity: int, flat_file_name: str, adapter: str) -> str:
    """The descriptor of a monolithicFlat disk of `capacity` bytes held in `flat_file_name`.

    `adapter` is a controller type as hardware records it. The content ids are fresh:
    the pair is a new disk, unrelated to any other.
    """
    if capacity <= 0 or capacity % SECTOR:
        raise VsphereError(f"disk capacity {capacity} is not a positive multiple of {SECTOR}")
    if not flat_file_name or any(c in flat_file_name for c in '"/\n'):
        raise VsphereError(f"flat file name {flat_file_name!r} is not a plain file name")
    try:
        adapter_type = ADAPTERS[adapter]
    except KeyError:
        raise VsphereError(f"adapter {adapter!r} is not one of {', '.join(ADAPTERS)}") from None
    sectors = capacity // SECTOR
    cylinders, heads, per_track = _geometry(adapter_type, sectors)
    uuid = " ".join(f"{b:02x}" for b in secrets.token_bytes(16))
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={secrets.token_hex(4)}\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} FLAT "{flat_file_name}" 0\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{adapter_type}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{heads}"\n'
        f'ddb.geometry.sectors = "{per_track}"\n'
        f'ddb.longContentID = "{secrets.token_hex(16)}"\n'
        f'ddb.uuid = "{uuid}"\n'
        'ddb.virtualHWVersion = "4"\n'
    )
