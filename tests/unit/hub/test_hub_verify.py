"""hub/verify.py on real qcow2 chains (qemu-img, qemu-io, qemu-nbd), cross-checked with
ovirt-imageio's client.checksum, which reads an overlay through its backing chain."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ovirt_imageio import client

from sendense_tools.hub import verify
from sendense_tools.hub.verify import ImageChecker
from sendense_tools.nbd import blkhash

MIB = 1 << 20
SIZE = 24 * MIB + 512 * 1024  # a short last block


def qemu_io(image: Path, *commands: str) -> None:
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(image)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def raw_of(image: Path) -> bytes:
    raw = image.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path, list[tuple[int, int]]]:
    """A full with data and holes, and an overlay on it with scattered changes: new data,
    data turned to zeroes, a write across a block border. (full, overlay, changed areas)."""
    full = tmp_path / "full.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(full), str(SIZE)], check=True)
    qemu_io(full, "write -P 0x11 1M 3M", "write -P 0x22 9M 2M", "write -P 0x33 24M 512k")
    overlay = tmp_path / "incr.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(full), "-F", "qcow2",
                    str(overlay)], check=True)  # fmt: skip
    areas = [(1 * MIB, 64 << 10), (4 * MIB - (64 << 10), 128 << 10), (9 * MIB, MIB)]
    qemu_io(overlay, "write -P 0x44 1M 64k", "write -P 0x55 4032k 128k", "write -z 9M 1M")
    return full, overlay, areas


def test_full_digests_match_ovirt_imageio_and_are_stored_beside_the_qcow2(chain):
    full, _, _ = chain
    digests = verify.full_digests(full, SIZE)
    assert blkhash.checksum_of_digests(digests) == client.checksum(str(full))
    assert verify.read_blocks(full) == digests
    assert sorted(p.name for p in full.parent.iterdir()) == [
        "full.qcow2", "full.qcow2.blocks", "incr.qcow2"
    ]  # fmt: skip


def test_an_incremental_is_checked_and_derived_from_its_change(chain):
    full, overlay, areas = chain
    verify.full_digests(full, SIZE)
    content = raw_of(overlay)
    digest = blkhash.changes_digest(lambda o, n: content[o : o + n], areas)
    assert verify.check_changes(overlay, areas, digest) is None
    problem = verify.check_changes(overlay, areas, "0" * 64)
    assert problem is not None and problem.startswith("changed areas differ")
    derived = verify.derive(full, overlay, SIZE, areas)
    assert derived == client.checksum(str(overlay)) == verify.verify_chain(overlay, SIZE)
    assert derived != client.checksum(str(full))
    assert verify.read_blocks(overlay) == blkhash.image_block_digests(overlay, SIZE)


def test_derive_reads_only_the_touched_blocks(chain, monkeypatch):
    full, overlay, areas = chain
    verify.full_digests(full, SIZE)
    read: list[int] = []
    original = blkhash.derive_digests

    def counting(parent, size, changed, read_block):
        return original(parent, size, changed, lambda i: read.append(i) or read_block(i))

    monkeypatch.setattr(blkhash, "derive_digests", counting)
    verify.derive(full, overlay, SIZE, areas)
    assert sorted(read) == [0, 1, 2]


def test_a_parent_without_blocks_costs_a_full_read_but_is_right(chain):
    full, overlay, areas = chain
    assert verify.read_blocks(full) is None
    assert verify.derive(full, overlay, SIZE, areas) == client.checksum(str(overlay))


def test_a_wrong_parent_digest_file_shows_in_the_chain_verification(chain):
    full, overlay, areas = chain
    verify.write_blocks(full, blkhash.ZERO_DIGEST * blkhash.block_count(SIZE))
    derived = verify.derive(full, overlay, SIZE, areas)
    assert derived != verify.verify_chain(overlay, SIZE)


class RecordedDisks:
    """The two Store calls ImageChecker makes, over fixed rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.image_sha: dict[str, str] = {}

    def disks(self, job_id: str) -> list[dict[str, Any]]:
        return self.rows

    def set_image_sha(self, job_id: str, disk_id: str, sha: str) -> None:
        self.image_sha[disk_id] = sha


async def test_check_compares_the_nodes_checksum_and_stores_blocks(chain):
    full, _, _ = chain
    good = client.checksum(str(full))
    bad = dict(good, checksum="ab" * 32)
    rows = [
        {"disk_id": "disk0", "qcow2_path": str(full), "capacity": SIZE, "sha256": None,
         "checksum": json.dumps(good)},
    ]  # fmt: skip
    store = RecordedDisks(rows)
    assert await ImageChecker(store).check("job") == []
    assert verify.read_blocks(full) is not None
    rows[0]["checksum"] = json.dumps(bad)
    problems = await ImageChecker(store).check("job")
    assert len(problems) == 1 and problems[0].startswith("disk0: checksum mismatch")
    rows[0]["checksum"] = None
    assert await ImageChecker(store).check("job") == ["disk0: node reported no checksum"]
    report = await ImageChecker(store).verify("job")
    assert report["ok"] is False and report["disks"][0]["checksum"] == good
