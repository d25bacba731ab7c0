"""A restored disk read back from the datastore and checked against the point's checksum.

The read goes the backup's https way (nbdkit curl on the flat file's /folder URL,
ranged GETs, the session cookie, the pinned certificate), so what is checked is
what vCenter stores, not what the node meant to send.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sendense_tools.backup.sources import curl_trust
from sendense_tools.errors import SendenseError
from sendense_tools.nbd.blkhash import checksum_of_digests, image_block_digests
from sendense_tools.nbd.sources import https_source
from sendense_tools.vsphere.connection import VsphereSession
from sendense_tools.vsphere.datastore import resolve_disk_url


class ChecksumMismatch(SendenseError):
    """The disk on the datastore is not the restore point's; the message names both sums."""


async def datastore_checksum(
    session: VsphereSession, datacenter: str, file: str, capacity: int
) -> dict[str, Any]:
    """The block checksum of `file`'s ("[ds] dir/name.vmdk") flat content as vCenter serves it."""
    cookie = session.session_cookie()
    url = await asyncio.to_thread(resolve_disk_url, session.trust, datacenter, file, cookie)
    verify, anchor_pem = curl_trust(session.trust)
    async with https_source(url, cookie, verify=verify, anchor_pem=anchor_pem) as source:
        # Cancelled, the thread may still be reading: leaving the block stops nbdkit,
        # which makes its reads fail and the thread end.
        digests = await asyncio.to_thread(image_block_digests, source.uri, capacity)
    return checksum_of_digests(digests)


def matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    return all(actual.get(k) == expected.get(k) for k in ("algorithm", "block_size", "checksum"))


def check(disk_id: str, expected: dict[str, Any], actual: dict[str, Any]) -> None:
    """ChecksumMismatch unless `actual` is the point's `expected` checksum."""
    if not matches(expected, actual):
        raise ChecksumMismatch(
            f"{disk_id}: the restored disk reads back as {_show(actual)}, "
            f"the restore point has {_show(expected)}"
        )


def _show(checksum: dict[str, Any]) -> str:
    return f"{checksum.get('algorithm')}/{checksum.get('block_size')}:{checksum.get('checksum')}"
