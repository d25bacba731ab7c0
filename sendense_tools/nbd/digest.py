"""SHA-256 of a disk's whole guest content, read over NBD.

The digest covers every byte of the virtual disk (zeros included), so it does
not depend on how the image stores holes. Extents the server reports as zero
are hashed from a zero buffer without being read, and data extents are read
with several requests in flight, so a sparse 2 GiB image costs little more
than hashing its data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbd

from sendense_tools.errors import SendenseError

CHUNK = 4 * 1024 * 1024
IN_FLIGHT = 8
# Block status requests are 32-bit; stay well below the limit and aligned.
STATUS_SPAN = 1024 * 1024 * 1024
_ZEROS = bytes(CHUNK)


class DigestError(SendenseError):
    """The image or export could not be read to the end."""


def _hash_zeros(h: hashlib._Hash, length: int) -> None:
    while length > 0:
        n = min(length, CHUNK)
        h.update(_ZEROS[:n] if n < CHUNK else _ZEROS)
        length -= n


def _collector(found: list[tuple[int, int, bool]]):
    def collect(context: str, start: int, entries: list[int], err: int) -> int:
        if context != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        pos = start
        for i in range(0, len(entries) - 1, 2):
            length, flags = entries[i], entries[i + 1]
            found.append((pos, length, bool(flags & nbd.STATE_ZERO)))
            pos += length
        return 0

    return collect


def _extents(handle: nbd.NBD, size: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_zero) covering [0, size) in order."""
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        yield 0, size, False
        return
    offset = 0
    while offset < size:
        found: list[tuple[int, int, bool]] = []
        handle.block_status(min(STATUS_SPAN, size - offset), offset, _collector(found))
        if not found:
            raise DigestError(f"server returned no extents at offset {offset}")
        for start, length, zero in found:
            length = min(length, size - start)
            if length <= 0:
                continue
            yield start, length, zero
            offset = start + length


def _hash_handle(handle: nbd.NBD) -> str:
    size = handle.get_size()
    digest = hashlib.sha256()
    # Reads are issued in order and hashed in the same order as they complete
    # at the head of the queue, so the digest is of the content in sequence.
    pending: deque[tuple[int, nbd.Buffer]] = deque()

    def drain(keep: int) -> None:
        while len(pending) > keep:
            cookie, buf = pending[0]
            while not handle.aio_command_completed(cookie):
                handle.poll(-1)
            pending.popleft()
            digest.update(buf.to_bytearray())

    for offset, length, zero in _extents(handle, size):
        if zero:
            drain(0)
            _hash_zeros(digest, length)
            continue
        end = offset + length
        while offset < end:
            n = min(CHUNK, end - offset)
            buf = nbd.Buffer(n)
            pending.append((handle.aio_pread(buf, offset), buf))
            offset += n
            drain(IN_FLIGHT - 1)
    drain(0)
    return digest.hexdigest()


@contextlib.contextmanager
def _psk_file(tls: Mapping[str, str]) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="sendense-psk-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{tls['username']}:{tls['psk']}\n".encode())
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def _connect(
    handle: nbd.NBD, uri: str, tls: Mapping[str, str] | None, psk_file: str | None
) -> None:
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    with contextlib.ExitStack() as stack:
        if tls is not None:
            handle.set_tls(nbd.TLS_REQUIRE)
            handle.set_tls_username(tls["username"])
            handle.set_tls_psk_file(psk_file or stack.enter_context(_psk_file(tls)))
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


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def sha256_of_image(path: str | Path, fmt: str = "qcow2", timeout: float = 30.0) -> str:
    """SHA-256 of an image file's guest content, read through a private qemu-nbd."""
    image = Path(path)
    if not image.is_file():
        raise DigestError(f"image {image} does not exist")
    qemu_nbd = shutil.which("qemu-nbd")
    if qemu_nbd is None:
        raise DigestError("qemu-nbd is not installed")
    with tempfile.TemporaryDirectory(prefix="sendense-digest-") as tmp:
        sock = Path(tmp, "nbd.sock")
        uri = f"nbd+unix:///image?socket={sock}"
        argv = [qemu_nbd, "--read-only", "--shared=1", "-k", str(sock), "-x", "image"]
        proc = subprocess.Popen(
            [*argv, "-f", fmt, str(image)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                handle = nbd.NBD()
                try:
                    _connect(handle, uri, None, None)
                    break
                except nbd.Error:
                    # A refused handle cannot be reused: libnbd frees it when dropped.
                    del handle
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    raise DigestError(f"qemu-nbd cannot serve {image}: {err or proc.returncode}")
                if time.monotonic() > deadline:
                    raise DigestError(f"qemu-nbd did not serve {image} within {timeout:.0f} s")
                time.sleep(0.01)
            return _digest(handle, str(image))
        finally:
            _stop(proc)
