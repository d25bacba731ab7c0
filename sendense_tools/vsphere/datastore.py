"""vCenter datastore file URLs (the `https` transport), as virt-v2v builds them."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from urllib.parse import quote

from sendense_tools.vsphere.connection import Endpoint, VsphereError
from sendense_tools.vsphere.inventory import split_datastore_file

# A snapshot's delta disk "name-000001.vmdk" keeps its data in "name-flat.vmdk".
SNAPSHOT_SUFFIX_RE = re.compile(r"^(?P<base>.*)-\d{6}(?P<ext>\.vmdk)$")


def _flat_path(path: str) -> str:
    stem = path[: -len(".vmdk")] if path.endswith(".vmdk") else path
    return f"{stem}-flat.vmdk"


def folder_url(endpoint: Endpoint, datacenter: str, file: str) -> str:
    """https://SERVER/folder/<path>-flat.vmdk?dcPath=<dc>&dsName=<ds> for "[ds] path.vmdk"."""
    ds, path = split_datastore_file(file)
    return (
        f"https://{endpoint.netloc}/folder/{quote(_flat_path(path), safe='/')}"
        f"?dcPath={quote(datacenter, safe='')}&dsName={quote(ds, safe='')}"
    )


def candidate_urls(endpoint: Endpoint, datacenter: str, file: str) -> list[str]:
    """The URL to try first, then (for a snapshot delta name) the base disk's flat file."""
    urls = [folder_url(endpoint, datacenter, file)]
    ds, path = split_datastore_file(file)
    m = SNAPSHOT_SUFFIX_RE.match(path)
    if m:
        urls.append(folder_url(endpoint, datacenter, f"[{ds}] {m['base']}{m['ext']}"))
    return urls


def probe_url(url: str, cookie: str, context: ssl.SSLContext, timeout: float = 30.0) -> int:
    """HTTP status of a one-byte ranged GET of `url` with the session cookie."""
    req = urllib.request.Request(url, headers={"Cookie": cookie, "Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise VsphereError(f"cannot reach {url.split('?')[0]}: {exc}") from None


def resolve_disk_url(
    endpoint: Endpoint, datacenter: str, file: str, cookie: str, context: ssl.SSLContext
) -> str:
    """The first candidate URL vCenter serves (virt-v2v's 404 fallback), or a clear error."""
    urls = candidate_urls(endpoint, datacenter, file)
    for url in urls:
        status = probe_url(url, cookie, context)
        if status in (200, 206):
            return url
        if status in (401, 403):
            raise VsphereError(f"vCenter refused datastore access to {file} (HTTP {status})")
        if status != 404:
            raise VsphereError(f"vCenter answered HTTP {status} for datastore file {file}")
    raise VsphereError(f"datastore file of {file} not found: {urls[0].split('?')[0]} (HTTP 404)")
