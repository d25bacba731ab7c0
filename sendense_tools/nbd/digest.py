"""SHA-256 of a disk's whole guest content, read over NBD (the records' `sha256`).

The digest covers every byte of the virtual disk (zeros included), so it does
not depend on how the image stores holes. Extents the server reports as zero
are hashed from a zero buffer without being read, and data extents are read
with several requests in flight. It hashes capacity, not data: the block hash
(nbd/blkhash.py) is the checksum whose cost follows the data.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import nbd

from sendense_tools.nbd.connect import PskFile
from sendense_tools.nbd.endpoint import TlsPsk
from sendense_tools.nbd.extents import extents
from sendense_tools.nbd.hasher import feed_zeros
from sendense_tools.nbd.image import ImageError, served_image

CHUNK = 4 * 1024 * 1024
IN_FLIGHT = 8


class DigestError(ImageError):
    """The image or export could not be read to the end."""


def _hash_handle(handle: nbd.NBD) -> str:
    size = handle.get_size()
    digest = hashlib.sha256()
    # Reads are issued in order and hashed in the same order as they complete
    # at the head of the queue, so the digest is of the content in sequence.
    pending: deque[tuple[int, memoryview]] = deque()

    def drain(keep: int) -> None:
        while len(pending) > keep:
            cookie, view = pending[0]
            while not handle.aio_command_completed(cookie):
                handle.poll(-1)
            pending.popleft()
            digest.update(view)
            # libnbd 1.14 never drops its reference to a buffer it read into: released
            # here, the bytes go back, or the hub would keep every byte it verified.
            view.release()

    for offset, length, zero in extents(handle, 0, size):
        if zero:
            drain(0)
            feed_zeros(digest.update, length)
            continue
        end = offset + length
        while offset < end:
            n = min(CHUNK, end - offset)
            view = memoryview(bytearray(n))
            pending.append((handle.aio_pread(nbd.Buffer.from_buffer(view), offset), view))
            offset += n
            drain(IN_FLIGHT - 1)
    drain(0)
    return digest.hexdigest()


def _connect(
    handle: nbd.NBD, uri: str, tls: Mapping[str, str] | None, psk_file: str | None
) -> None:
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    with contextlib.ExitStack() as stack:
        if tls is not None:
            handle.set_tls(nbd.TLS_REQUIRE)
            handle.set_tls_username(tls["username"])
            if psk_file is None:
                keys = PskFile(TlsPsk(tls["username"], tls["psk"]))
                stack.callback(keys.remove)
                psk_file = keys.path
            handle.set_tls_psk_file(psk_file)
        handle.connect_uri(uri)


def _digest(handle: nbd.NBD, uri: str) -> str:
    try:
        result = _hash_handle(handle)
        with contextlib.suppress(nbd.Error):
            handle.shutdown()
        return result
    except nbd.Error as exc:
        raise DigestError(f"cannot read {uri}: {exc.string}") from None


def sha256_of_nbd(
    uri: str, tls: Mapping[str, str] | None = None, *, psk_file: str | None = None
) -> str:
    """SHA-256 of the export at `uri` (nbd://, nbd+unix://).

    `tls` = {"username", "psk"} (the form the hub sends to nodes); with
    `psk_file` (an existing "user:hex" file) only tls["username"] is used.
    """
    handle = nbd.NBD()
    try:
        _connect(handle, uri, tls, psk_file)
    except nbd.Error as exc:
        raise DigestError(f"cannot connect to {uri}: {exc.string}") from None
    return _digest(handle, uri)


def sha256_of_image(path: str | Path, fmt: str = "qcow2", timeout: float = 30.0) -> str:
    """SHA-256 of an image file's guest content, read through a private qemu-nbd."""
    try:
        with served_image(path, fmt=fmt, shared=1, timeout=timeout) as uri:
            handle = nbd.NBD()
            try:
                _connect(handle, uri, None, None)
            except nbd.Error as exc:
                raise DigestError(f"cannot connect to {path}: {exc.string}") from None
            return _digest(handle, str(path))
    except DigestError:
        raise
    except ImageError as e:
        raise DigestError(str(e)) from None
