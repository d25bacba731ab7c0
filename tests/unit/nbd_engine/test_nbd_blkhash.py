"""nbd/blkhash.py against ovirt-imageio's own client.checksum on real images (qemu-nbd)."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest
from ovirt_imageio import client

from sendense_tools.nbd import blkhash
from sendense_tools.nbd.blkhash import BLOCK_SIZE, StreamDigests
from sendense_tools.nbd.image import ImageError

MIB = 1 << 20
# not a multiple of the block size: the last block is short (qemu sizes are 512-aligned)
SIZE = 5 * BLOCK_SIZE + 3 * MIB + 512


def make_raw(path: Path, size: int = SIZE, seed: int = 1) -> bytes:
    """Data blocks, a hole, data that is all zeroes, a write across a block border and the
    short last block; returns the content."""
    rng = random.Random(seed)
    content = bytearray(size)
    content[MIB : 2 * MIB] = rng.randbytes(MIB)
    content[2 * BLOCK_SIZE - 4096 : 2 * BLOCK_SIZE + 4096] = rng.randbytes(8192)
    content[size - 700 : size - 200] = rng.randbytes(500)
    with open(path, "wb") as f:
        f.truncate(size)
        for start, end in [
            (MIB, 2 * MIB),
            (2 * BLOCK_SIZE - 4096, 2 * BLOCK_SIZE + 4096),
            (3 * BLOCK_SIZE, 3 * BLOCK_SIZE + MIB),
            (size - 700, size - 200),
        ]:
            f.seek(start)
            f.write(content[start:end])  # fmt: skip
    return bytes(content)


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path, bytes]:
    raw = tmp_path / "disk.raw"
    content = make_raw(raw)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    return raw, qcow2, content


def blocks_of(content: bytes) -> list[bytes]:
    return [content[i : i + BLOCK_SIZE] for i in range(0, len(content), BLOCK_SIZE)]


def test_checksum_of_raw_and_qcow2_equals_ovirt_imageio(images):
    raw, qcow2, _ = images
    for image in (raw, qcow2):
        ours = blkhash.checksum_of_digests(blkhash.image_block_digests(image, SIZE))
        assert ours == client.checksum(str(image)), image.name


def test_one_read_gives_the_block_digests_and_the_sha256_of_the_whole_content(images):
    raw, qcow2, content = images
    for image in (raw, qcow2):
        digests, sha = blkhash.image_digests(image, SIZE, sha256=True)
        assert digests == blkhash.image_block_digests(image, SIZE), image.name
        assert sha == hashlib.sha256(content).hexdigest(), image.name
    assert blkhash.image_digests(raw, SIZE)[1] is None


def test_digests_are_blake2b_of_each_block_and_zero_blocks_get_the_zero_digest(images):
    raw, _, content = images
    digests = blkhash.image_block_digests(raw, SIZE)
    expected = [hashlib.blake2b(b, digest_size=32).digest() for b in blocks_of(content)]
    assert digests == b"".join(expected)
    assert expected[4] == blkhash.ZERO_DIGEST  # block 4 is a hole
    assert blkhash.zero_digest(BLOCK_SIZE) == blkhash.ZERO_DIGEST
    assert blkhash.zero_digest(512) == hashlib.blake2b(bytes(512), digest_size=32).digest()


def test_stream_digests_fed_in_pieces_equal_the_image_reading(images):
    raw, _, content = images
    rng = random.Random(7)
    sink = StreamDigests(SIZE)
    try:
        pos = 0
        while pos < SIZE:
            n = min(SIZE - pos, rng.randrange(1, 3 * MIB))
            piece = content[pos : pos + n]
            sink.update(None if piece.count(0) == n else memoryview(piece), n)
            pos += n
        assert sink.digests() == blkhash.image_block_digests(raw, SIZE)
    finally:
        sink.close()


def test_changes_digest_covers_offsets_lengths_and_data(images):
    _, _, content = images
    areas = [(0, 4096), (2 * BLOCK_SIZE - 4096, 8192), (SIZE - 1024, 1024)]
    h = hashlib.blake2b(digest_size=32)
    for offset, length in areas:
        h.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
        h.update(content[offset : offset + length])

    def read(offset: int, length: int) -> bytes:
        return content[offset : offset + length]

    assert blkhash.changes_digest(read, areas) == h.hexdigest()
    moved = [(0, 4096), (2 * BLOCK_SIZE, 8192), (SIZE - 1024, 1024)]
    assert blkhash.changes_digest(read, moved) != h.hexdigest()


def test_derived_digests_equal_a_full_reading_of_the_changed_disk(images):
    raw, _, content = images
    parent = blkhash.image_block_digests(raw, SIZE)
    changed = bytearray(content)
    areas = [(100, 50), (2 * BLOCK_SIZE - 10, 20), (SIZE - 512, 512)]
    for offset, length in areas:
        changed[offset : offset + length] = b"\x42" * length
    changed[MIB : MIB + 4096] = bytes(4096)  # data turned to zeroes
    areas.insert(1, (MIB, 4096))
    touched = blkhash.blocks_touched(areas)
    assert touched == {0, 1, 2, 5}

    def read_block(i: int) -> bytes:
        return bytes(changed[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE])

    derived = blkhash.derive_digests(parent, SIZE, touched, read_block)
    raw.write_bytes(changed)
    assert derived == blkhash.image_block_digests(raw, SIZE)
    assert blkhash.checksum_of_digests(derived) == client.checksum(str(raw))


def test_a_parent_of_another_size_is_not_derived_from(images):
    raw, _, content = images
    smaller = blkhash.image_block_digests(raw, SIZE - BLOCK_SIZE)
    read_count = []

    def read_block(i: int) -> bytes:
        read_count.append(i)
        return content[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]

    derived = blkhash.derive_digests(smaller, SIZE, {0}, read_block)
    assert sorted(read_count) == list(range(blkhash.block_count(SIZE)))
    assert derived == blkhash.image_block_digests(raw, SIZE)


def test_a_missing_image_is_one_clear_error(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        blkhash.image_block_digests(tmp_path / "nope.qcow2", SIZE)
