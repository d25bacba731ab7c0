"""Reproducible disk content: random data regions between zero regions (sparse)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

GRAIN = 64 * 1024
ZERO_GRAIN = bytes(GRAIN)


@dataclass(frozen=True)
class Region:
    offset: int
    length: int
    data: bool  # False = zeros


def regions(capacity: int, seed: str, data_ratio: float = 0.4) -> Iterator[Region]:
    """Regions of 64 KiB .. 4 MiB covering [0, capacity), about `data_ratio` of them data.

    The first region is always data so every disk has a recognisable start.
    """
    rng = random.Random(seed)
    offset = 0
    first = True
    while offset < capacity:
        length = min(rng.randint(1, 64) * GRAIN, capacity - offset)
        data = first or rng.random() < data_ratio
        first = False
        yield Region(offset, length, data)
        offset += length


def region_bytes(region: Region, seed: str) -> bytes:
    if not region.data:
        return bytes(region.length)
    return random.Random(f"{seed}@{region.offset}").randbytes(region.length)


def _hash_zeros(h: hashlib._Hash, length: int) -> None:
    while length:
        n = min(length, GRAIN)
        h.update(ZERO_GRAIN[:n])
        length -= n


def content_sha256(capacity: int, seed: str) -> str:
    """SHA-256 of the whole guest content the pattern describes (zeros included)."""
    h = hashlib.sha256()
    for r in regions(capacity, seed):
        if r.data:
            h.update(region_bytes(r, seed))
        else:
            _hash_zeros(h, r.length)
    return h.hexdigest()


def write_sparse_file(path: str, capacity: int, seed: str) -> str:
    """Write the pattern as a sparse file of exactly `capacity` bytes; return its SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        f.truncate(capacity)
        for r in regions(capacity, seed):
            if r.data:
                buf = region_bytes(r, seed)
                f.seek(r.offset)
                f.write(buf)
                h.update(buf)
            else:
                _hash_zeros(h, r.length)
    return h.hexdigest()


def iter_content(capacity: int, seed: str, chunk: int = 4 << 20) -> Iterator[bytes]:
    """The whole content as chunks (for an HTTP PUT)."""
    for r in regions(capacity, seed):
        if r.data:
            yield region_bytes(r, seed)
        else:
            left = r.length
            while left:
                n = min(left, chunk)
                yield bytes(n)
                left -= n
