"""oVirt imageio's block hash, the checksum of every restore point (DESIGN "Checksums").

The checksum is blake2b-256 over the blake2b-256 digests of each 4 MiB block in order (the
last block may be short). A zero block's digest is known in advance, so zero areas cost
nothing; blocks are independent, so they hash in parallel threads (hashlib releases the
GIL). Keeping the per-block digests of a point lets the next point's checksum be derived
by re-hashing only the blocks that changed.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

BLOCK_SIZE = 4 << 20
ALGORITHM = "blake2b"
DIGEST_SIZE = 32
WORKERS = min(4, os.cpu_count() or 1)
_ZEROS = memoryview(bytes(BLOCK_SIZE))

Read = Callable[[int, int], bytes]


def block_digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


ZERO_DIGEST = block_digest(_ZEROS)


def zero_digest(length: int) -> bytes:
    """The digest of `length` zero bytes (a whole block, or a disk's short last block)."""
    return ZERO_DIGEST if length == BLOCK_SIZE else block_digest(_ZEROS[:length])


def block_count(size: int) -> int:
    return -(-size // BLOCK_SIZE)


def block_span(size: int, index: int) -> tuple[int, int]:
    """(offset, length) of block `index` of a disk of `size` bytes."""
    offset = index * BLOCK_SIZE
    return offset, min(BLOCK_SIZE, size - offset)


def checksum_of_digests(digests: bytes) -> dict:
    return {
        "algorithm": ALGORITHM,
        "block_size": BLOCK_SIZE,
        "checksum": hashlib.blake2b(digests, digest_size=DIGEST_SIZE).hexdigest(),
    }


def blocks_touched(areas: Iterable[tuple[int, int]]) -> set[int]:
    """Indices of the blocks that any of `areas` overlaps."""
    touched: set[int] = set()
    for offset, length in areas:
        if length > 0:
            touched.update(range(offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE + 1))
    return touched


def changes_digest(read: Read, areas: Iterable[tuple[int, int]]) -> str:
    """blake2b-256 over, per area in order, its offset and length (8 bytes big-endian each)
    and its data: the digest an incremental's sender and its receiver compare."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for offset, length in areas:
        h.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
        at, end = offset, offset + length
        while at < end:
            n = min(BLOCK_SIZE, end - at)
            h.update(read(at, n))
            at += n
    return h.hexdigest()


def _hash_blocks(indices: list[int], read_block: Callable[[int], bytes]) -> dict[int, bytes]:
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="blkhash") as pool:
        digests = pool.map(lambda i: block_digest(read_block(i)), indices)
        return dict(zip(indices, digests, strict=True))


def derive_digests(
    parent: bytes, size: int, changed_blocks: set[int], read_block: Callable[[int], bytes]
) -> bytes:
    """The parent's block digests with `changed_blocks` re-hashed from `read_block(index)`.
    A parent of another block count (the disk was resized) is not derived from: every
    block is re-hashed."""
    count = block_count(size)
    if len(parent) != count * DIGEST_SIZE:
        changed_blocks = set(range(count))
    fresh = _hash_blocks(sorted(i for i in changed_blocks if 0 <= i < count), read_block)
    out = bytearray(parent if len(parent) == count * DIGEST_SIZE else bytes(count * DIGEST_SIZE))
    for i, digest in fresh.items():
        out[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digest
    return bytes(out)


def image_block_digests(path_or_uri: str | Path, size: int) -> bytes:
    """The block digests of an image file (through qemu-nbd) or an NBD export: blocks the
    extents show as zero are not read, the others are read and hashed in parallel."""
    return image_digests(path_or_uri, size)[0]


def image_digests(
    path_or_uri: str | Path, size: int, sha256: bool = False
) -> tuple[bytes, str | None]:
    """`image_block_digests`, and with `sha256` the SHA-256 of the whole content (zeroes
    included) from the same read: one pass over the image for both."""
    # Imported here: hashing alone (the lab's seeder, on a host without libnbd) needs no NBD.
    from sendense_tools.nbd.image import open_image

    with open_image(path_or_uri, shared=WORKERS + 1) as image:
        if image.size < size:
            raise ValueError(f"{image.name} holds {image.size} bytes, fewer than {size}")
        data: set[int] = set()
        for offset, length, zero in image.extents(0, size):
            if not zero:
                data.update(blocks_touched([(offset, length)]))
        read = lambda i: image.read(*block_span(size, i))  # noqa: E731
        if sha256:
            fresh, sha = _hash_in_order(size, data, read)
        else:
            fresh, sha = _hash_blocks(sorted(data), read), None
    digests = b"".join(
        fresh[i] if i in fresh else zero_digest(block_span(size, i)[1])
        for i in range(block_count(size))
    )
    return digests, sha


def _hash_in_order(
    size: int, data: set[int], read_block: Callable[[int], bytes]
) -> tuple[dict[int, bytes], str]:
    """Digests of the `data` blocks, read and hashed on a thread pool, and the SHA-256 of
    every block in order (the others as zeroes), a bounded window of blocks ahead."""
    sha = hashlib.sha256()
    fresh: dict[int, bytes] = {}
    window: deque[tuple[int, Future[tuple[bytes, bytes]] | None]] = deque()

    def read_and_hash(i: int) -> tuple[bytes, bytes]:
        block = read_block(i)
        return block_digest(block), block

    def drain(keep: int) -> None:
        while len(window) > keep:
            i, future = window.popleft()
            if future is None:
                length = block_span(size, i)[1]
                sha.update(_ZEROS[:length])
                continue
            fresh[i], block = future.result()
            sha.update(block)

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="blkhash") as pool:
        for i in range(block_count(size)):
            window.append((i, pool.submit(read_and_hash, i) if i in data else None))
            drain(2 * WORKERS)
        drain(0)
    return fresh, sha.hexdigest()


class StreamDigests:
    """Block digests of a disk fed in offset order (an OrderedHasher sink, as a copy reads
    it): a block fed only as zeroes is not hashed, full blocks hash on a thread pool."""

    def __init__(self, size: int, workers: int = WORKERS) -> None:
        self.size = size
        self._buf = bytearray(BLOCK_SIZE)
        self._fill = 0
        self._has_data = False  # else every byte of the current block so far is zero
        self._digests: list[bytes | Future[bytes]] = []
        self._inflight: deque[Future[bytes]] = deque()
        self._backlog = 2 * workers  # blocks copied and waiting for a thread: bounds memory
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="blkhash")

    def start_area(self, offset: int, length: int) -> None:
        pass

    def update(self, data: memoryview | None, length: int) -> None:
        while length:
            block_len = block_span(self.size, len(self._digests))[1]
            n = min(block_len - self._fill, length)
            end = self._fill + n
            if data is None:
                if self._has_data:
                    self._buf[self._fill : end] = _ZEROS[:n]
            else:
                if not self._has_data:
                    self._buf[: self._fill] = _ZEROS[: self._fill]
                    self._has_data = True
                self._buf[self._fill : end] = data[:n]
                data = data[n:]
            self._fill, length = end, length - n
            if self._fill == block_len:
                self._end_block(block_len)

    def _end_block(self, length: int) -> None:
        if self._has_data:
            future = self._pool.submit(block_digest, bytes(self._buf[:length]))
            self._digests.append(future)
            self._inflight.append(future)
            while len(self._inflight) > self._backlog:
                self._inflight.popleft().result()
        else:
            self._digests.append(zero_digest(length))
        self._fill, self._has_data = 0, False

    def digests(self) -> bytes:
        """All block digests; call once the whole disk was fed."""
        if len(self._digests) != block_count(self.size):
            raise RuntimeError(f"{len(self._digests)} of {block_count(self.size)} blocks fed")
        return b"".join(d if isinstance(d, bytes) else d.result() for d in self._digests)

    def checksum(self) -> dict:
        return checksum_of_digests(self.digests())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
