"""The lab's seeded disk content: reproducible, sparse, hashed over the whole capacity."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest

from sendense_tools.lab.pattern import content_sha256, regions, write_sparse_file
from sendense_tools.lab.seed import parse_size, parse_sizes


def test_pattern_mixes_data_and_zero_regions_and_covers_the_capacity():
    capacity = 32 << 20
    rs = list(regions(capacity, "s"))
    assert rs[0].offset == 0 and rs[0].data
    assert sum(r.length for r in rs) == capacity
    assert any(r.data for r in rs) and any(not r.data for r in rs)
    assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(rs))


def test_sparse_file_has_the_promised_sha256_and_is_sparse(tmp_path):
    capacity = 16 << 20
    path = tmp_path / "disk-flat.vmdk"
    digest = write_sparse_file(str(path), capacity, "seed-a")
    assert os.path.getsize(path) == capacity
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert digest == content_sha256(capacity, "seed-a")
    assert path.stat().st_blocks * 512 < capacity  # zero regions are holes
    assert content_sha256(capacity, "seed-b") != digest


def test_sizes_parse_with_units():
    assert parse_sizes("64M,32M,1G,4096") == [64 << 20, 32 << 20, 1 << 30, 4096]
    with pytest.raises(ValueError, match="no disk sizes"):
        parse_sizes(" , ")
    for bad in ("12X", "0", "100"):
        with pytest.raises(ValueError, match=bad):
            parse_size(bad)
