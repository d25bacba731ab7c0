"""vCenter datastore file URLs (the `https` transport), as virt-v2v builds them.

The transport reads a disk's `-flat.vmdk`, which holds a snapshot's content only
when the snapshot's disk is a base disk. A delta file ("name-000001.vmdk") has no
flat file of its own; its base's flat file holds an older state, so it is refused,
never substituted.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote

from sendense_tools.vsphere.inventory import split_datastore_file
from sendense_tools.vsphere.params import Endpoint, VsphereError
from sendense_tools.vsphere.trust import Trust

SNAPSHOT_DELTA_RE = re.compile(r"^.*-\d{6}\.vmdk$")


class DeltaDiskError(VsphereError):
    """The disk to read is a snapshot delta, which /folder cannot serve as a flat disk."""


def _flat_path(path: str) -> str:
    stem = path[: -len(".vmdk")] if path.endswith(".vmdk") else path
    return f"{stem}-flat.vmdk"


def file_url(endpoint: Endpoint, datacenter: str, file: str) -> str:
    """https://SERVER/folder/<path>?dcPath=<dc>&dsName=<ds> for the datastore file "[ds] path"."""
    ds, path = split_datastore_file(file)
    return (
        f"https://{endpoint.netloc}/folder/{quote(path, safe='/')}"
        f"?dcPath={quote(datacenter, safe='')}&dsName={quote(ds, safe='')}"
    )


def folder_url(endpoint: Endpoint, datacenter: str, file: str) -> str:
    """The URL of the flat file that holds the disk "[ds] path.vmdk": <path>-flat.vmdk."""
    ds, path = split_datastore_file(file)
    return file_url(endpoint, datacenter, f"[{ds}] {_flat_path(path)}")


def disk_url(endpoint: Endpoint, datacenter: str, file: str) -> str:
    """The /folder URL of the flat file holding `file`'s content; a delta disk is refused."""
    _, path = split_datastore_file(file)
    if SNAPSHOT_DELTA_RE.match(path):
        raise DeltaDiskError(
            f"disk {file} is a snapshot delta file: the https transport reads only base "
            "disks (the base's -flat.vmdk holds older data); use the vddk transport"
        )
    return folder_url(endpoint, datacenter, file)


def probe_url(url: str, cookie: str, trust: Trust, timeout: float = 30.0) -> int:
    """HTTP status of a one-byte ranged GET of `url` with the session cookie."""
    req = urllib.request.Request(url, headers={"Cookie": cookie, "Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(req, context=trust.context, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise trust.refusal("datastore", exc.reason) from None
        raise VsphereError(f"cannot reach {url.split('?')[0]}: {exc.reason}") from None
    except OSError as exc:
        raise VsphereError(f"cannot reach {url.split('?')[0]}: {exc}") from None


def resolve_disk_url(trust: Trust, datacenter: str, file: str, cookie: str) -> str:
    """The URL of `file`'s content, checked to be served, or a clear error."""
    url = disk_url(trust.endpoint, datacenter, file)
    status = probe_url(url, cookie, trust)
    if status in (200, 206):
        return url
    if status in (401, 403):
        raise VsphereError(f"vCenter refused datastore access to {file} (HTTP {status})")
    if status == 404:
        raise VsphereError(f"datastore file of {file} not found: {url.split('?')[0]} (HTTP 404)")
    raise VsphereError(f"vCenter answered HTTP {status} for datastore file {file}")
