"""copy_disk's checksums and its copy of changed areas into a qcow2 overlay, against real
nbdkit (file) sources and qemu-nbd targets, cross-checked with ovirt-imageio and qemu-img."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from ovirt_imageio import client

from sendense_tools.nbd import disk_copy, worker
from sendense_tools.nbd.copy import CopyError, copy_disk
from sendense_tools.nbd.sources import file_source
from tests.integration.nbd_engine.servers import QemuTarget, copy_threads
from tests.integration.nbd_engine.test_nbd_copy import wait_until

BLOCK = 4 << 20
AREA = 64 << 10  # CBT's granularity


def guest_bytes(image: Path) -> bytes:
    """A qcow2's guest content through its whole backing chain, read by qemu-img."""
    raw = image.with_suffix(".check.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


def zero_window(content: bytes, after: int) -> int:
    """Offset of the first AREA-aligned all-zero window of 2 AREAs after `after`."""
    for offset in range(after - after % AREA, len(content) - 2 * AREA, AREA):
        if not any(content[offset : offset + 2 * AREA]):
            return offset
    raise AssertionError("the test disk has no zero window")


def drop_backing(image: Path) -> None:
    subprocess.run(["qemu-img", "rebase", "-u", "-b", "", str(image)], check=True)


def data_bytes(content: bytes, areas: list[tuple[int, int]]) -> int:
    """Bytes of the areas' non-zero SPARSE_SIZE blocks: what the copy must send as data."""
    step = worker.SPARSE_SIZE
    return sum(
        step
        for offset, length in areas
        for at in range(offset, offset + length, step)
        if any(content[at : at + step])
    )


def changes_digest(content: bytes, areas: list[tuple[int, int]]) -> str:
    h = hashlib.blake2b(digest_size=32)
    for offset, length in areas:
        h.update(offset.to_bytes(8, "big") + length.to_bytes(8, "big"))
        h.update(content[offset : offset + length])
    return h.hexdigest()


@pytest.fixture(scope="module")
def older(source_disk, tmp_path_factory) -> Path:
    """The previous point's content: random everywhere, so a skipped zero would show."""
    path = tmp_path_factory.mktemp("older") / "older.raw"
    path.write_bytes(os.urandom(source_disk.size))
    return path


async def test_full_copy_checksum_equals_ovirt_imageio_on_source_and_target(
    source_disk, make_target
):
    target = make_target(source_disk.size)
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk("disk0", src, target.endpoint)
    target.stop()
    expected = client.checksum(str(source_disk.path))
    assert result.checksum == expected == client.checksum(str(target.image))
    assert result.sha256 == source_disk.sha256  # kept while the records carry it
    assert result.changes is None


async def test_areas_copy_overwrites_the_backing_inside_and_keeps_it_outside(
    source_disk, older, make_overlay
):
    content = source_disk.path.read_bytes()
    hole = zero_window(content, 20 << 20)
    areas = [
        (0, AREA),
        (BLOCK - AREA, 2 * AREA),  # across a block border
        (hole, 2 * AREA),  # data turned to zeroes: must read as zeroes, not as the backing
        (40 << 20, 5 * AREA),
        (source_disk.size - AREA, AREA),  # the last bytes ("the end")
    ]
    assert sorted(areas) == areas
    target: QemuTarget = make_overlay(older)
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk(
            "disk0", src, target.endpoint, areas=areas, target_is_zero=False, connections=2
        )
    target.stop()
    got = guest_bytes(target.image)
    expected = bytearray(older.read_bytes())
    for offset, length in areas:
        expected[offset : offset + length] = content[offset : offset + length]
    assert got == bytes(expected)
    assert not any(got[hole : hole + 2 * AREA])
    total = sum(length for _, length in areas)
    assert result.changes == {
        "algorithm": "blake2b",
        "areas": len(areas),
        "bytes": total,
        "digest": changes_digest(content, areas),
    }
    assert result.bytes_copied == data_bytes(content, areas) < total
    assert result.bytes_copied + result.bytes_zero == total
    assert result.sha256 is None and result.checksum is None


async def test_whole_disk_areas_into_an_overlay_give_the_full_checksum_and_stand_alone(
    source_disk, older, make_overlay
):
    # The node's fall-back to a full when the hub already made an overlay.
    target = make_overlay(older)
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk(
            "disk0", src, target.endpoint, areas=[(0, source_disk.size)], target_is_zero=False
        )
    target.stop()
    assert result.checksum == client.checksum(str(source_disk.path))
    assert result.bytes_copied < source_disk.size  # zero runs went as WRITE_ZEROES
    # Every cluster was written, so the backing file can go (what the hub does).
    drop_backing(target.image)
    assert guest_bytes(target.image) == source_disk.path.read_bytes()


async def test_areas_copy_survives_a_target_restart(source_disk, older, make_overlay, monkeypatch):
    monkeypatch.setattr(disk_copy, "CHECKPOINT_BYTES", 2 << 20)
    content = source_disk.path.read_bytes()
    areas = [(offset, 3 * AREA) for offset in range(0, source_disk.size - 3 * AREA, 1 << 20)]
    total = sum(length for _, length in areas)
    target = make_overlay(older, write_bps=4_000_000)
    seen: list[int] = []
    async with file_source(str(source_disk.path)) as src:
        task = asyncio.create_task(
            copy_disk(
                "disk0",
                src,
                target.endpoint,
                areas=areas,
                target_is_zero=False,
                retry_for=60,
                on_progress=lambda p: seen.append(p.bytes_done),
            )
        )
        await wait_until(lambda: seen and seen[-1] > total // 4)
        target.kill()  # SIGKILL: unflushed writes are lost, the port refuses
        await asyncio.sleep(1)
        target.start()
        result = await task
    target.stop()
    assert result.retries > 0
    assert result.changes["digest"] == changes_digest(content, areas)
    expected = bytearray(older.read_bytes())
    for offset, length in areas:
        expected[offset : offset + length] = content[offset : offset + length]
    assert guest_bytes(target.image) == bytes(expected)
    assert seen[-1] == total


async def test_bad_areas_are_one_clear_error_and_leave_nothing_running(source_disk, make_target):
    target = make_target(source_disk.size)
    async with file_source(str(source_disk.path)) as src:
        with pytest.raises(ValueError, match="overlaps"):
            await copy_disk("disk0", src, target.endpoint, areas=[(0, AREA), (AREA - 1, 10)])
        with pytest.raises(CopyError) as err:
            await copy_disk("disk0", src, target.endpoint, areas=[(source_disk.size - 10, 20)])
    message = str(err.value)
    assert message.startswith("disk0: area (") and "ends past the disk" in message
    assert "\n" not in message
    assert not copy_threads()


async def test_a_full_without_sha256_still_has_its_block_checksum(source_disk, make_target):
    target = make_target(source_disk.size)
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk("disk0", src, target.endpoint, sha256=False)
    target.stop()
    assert result.sha256 is None
    assert result.checksum == client.checksum(str(source_disk.path))
    assert guest_bytes(target.image) == source_disk.path.read_bytes()
