"""The ordered hasher equals hashlib over the same bytes, whatever order chunks arrive in."""

from __future__ import annotations

import hashlib
import random

from sendense_tools.nbd.hasher import OrderedHasher


def test_out_of_order_chunks_and_zero_ranges_hash_like_hashlib():
    rng = random.Random(3)
    pieces = []
    for _ in range(50):
        n = rng.randrange(1, 300_000)
        pieces.append(None if rng.random() < 0.4 else rng.randbytes(n))
        if pieces[-1] is None:
            pieces[-1] = n
    offsets, pos = [], 0
    for p in pieces:
        offsets.append(pos)
        pos += p if isinstance(p, int) else len(p)
    expected = hashlib.sha256(
        b"".join(bytes(p) if isinstance(p, int) else p for p in pieces)
    ).hexdigest()
    hasher = OrderedHasher(pos)
    released = []
    order = list(range(len(pieces)))
    rng.shuffle(order)
    try:
        for i in order:
            p = pieces[i]
            if isinstance(p, int):
                hasher.submit(offsets[i], p, None)
            else:
                hasher.submit(offsets[i], len(p), memoryview(p), lambda i=i: released.append(i))
        # a chunk read again after a reconnect is skipped, also when it straddles the position
        hasher.wait_for(pos)
        hasher.submit(0, 10, memoryview(b"x" * 10))
        assert hasher.hexdigest() == expected
    finally:
        hasher.close()
    assert sorted(released) == sorted(i for i, p in enumerate(pieces) if not isinstance(p, int))
