"""A server's base:allocation map: the one place that reads block-status replies."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import nbd

# Block-status requests carry a 32-bit length; stay well below it and aligned.
MAX_STATUS_REQUEST = 1 << 30

Extent = tuple[int, int, bool]  # (offset, length, reads as zeroes)
# handle.block_status's signature: (length, offset, extent callback).
BlockStatus = Callable[[int, int, Callable[..., int]], object]


def window(
    handle: nbd.NBD, offset: int, length: int, block_status: BlockStatus | None = None
) -> list[Extent]:
    """Extents covering a prefix of [offset, offset + length), merged and clipped.

    A server without base:allocation, or one whose reply covers nothing usable, gets the
    whole window as data: reading it is always correct, only slower. `block_status`
    replaces the handle's blocking call (a caller that must be able to stop waiting).
    """
    length = min(length, MAX_STATUS_REQUEST)
    if length <= 0:
        return []
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        return [(offset, length, False)]
    replies: list[tuple[int, list[int]]] = []

    def collect(context: str, start: int, entries: list[int], _err: object) -> int:
        # Runs inside libnbd (maybe while a worker's other completions fire): only record.
        if context == nbd.CONTEXT_BASE_ALLOCATION:
            replies.append((start, list(entries)))
        return 0

    (block_status or handle.block_status)(length, offset, collect)
    end = offset + length
    found: list[Extent] = []
    at = offset
    for start, entries in replies:
        if start != at:
            break
        for i in range(0, len(entries) - 1, 2):
            if at >= end:
                break
            n = min(entries[i], end - at)
            if n <= 0:
                break
            zero = bool(entries[i + 1] & nbd.STATE_ZERO)
            if found and found[-1][2] == zero:
                s, m, _ = found.pop()
                found.append((s, m + n, zero))
            else:
                found.append((at, n, zero))
            at += n
    return found or [(offset, length, False)]


def extents(handle: nbd.NBD, offset: int, end: int) -> Iterator[Extent]:
    """Extents covering [offset, end) in order."""
    while offset < end:
        for extent in window(handle, offset, end - offset):
            yield extent
            offset = extent[0] + extent[1]
