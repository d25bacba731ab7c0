"""A seeded disk's checksum, computed from the pattern alone, equals ovirt-imageio's
client.checksum of the file the pattern writes."""

from __future__ import annotations

from ovirt_imageio import client

from sendense_tools.lab.pattern import write_sparse_file
from sendense_tools.lab.seed import content_checksum


def test_seeded_checksum_equals_ovirt_imageio_of_the_written_disk(tmp_path):
    capacity = (37 << 20) + (192 << 10)  # a short last block
    flat = tmp_path / "disk-flat.vmdk"
    write_sparse_file(str(flat), capacity, "sendense:web01:disk0")
    assert content_checksum(capacity, "sendense:web01:disk0") == client.checksum(str(flat))
