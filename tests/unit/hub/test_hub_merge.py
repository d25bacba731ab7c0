"""hub/merge.py on real qcow2 chains made with qemu-img and qemu-io: the merged child
reads the same (the hub's own chain checksum, hub/verify.py), its children too, and
the pruned point's file is never written."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from sendense_tools.hub.merge import (
    MergeError,
    allocated_bytes,
    backing_file,
    merge_disk,
    merge_disks,
    remove_temps,
)
from sendense_tools.hub.verify import verify_chain

MiB = 1024 * 1024
SIZE = 64 * MiB
pytestmark = pytest.mark.asyncio


def qemu_io(path: Path, *commands: str) -> None:
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(path)], check=True,
                   capture_output=True)  # fmt: skip


def image(path: Path, backing: Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    chain = ["-b", str(backing), "-F", "qcow2"] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *chain, str(path), str(SIZE)],
                   check=True)  # fmt: skip
    return path


def check_clean(path: Path) -> None:
    subprocess.run(["qemu-img", "check", "-q", str(path)], check=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def points(tmp_path):
    """F <- I1 <- I2 in the repository layout, each with writes over the previous."""
    root = tmp_path / "repository" / "web01"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    full = image(root / ids[0] / "disk0.qcow2")
    qemu_io(full, "write -P 1 0 16M", "write -P 2 32M 8M")
    inc1 = image(root / ids[1] / "disk0.qcow2", full)
    # New data, data zeroed (an overlay's zero cluster hides the full's data) and a
    # write across the old data's end.
    qemu_io(inc1, "write -P 3 1M 2M", "write -z 4M 4M", "write -P 4 36M 8M")
    inc2 = image(root / ids[2] / "disk0.qcow2", inc1)
    qemu_io(inc2, "write -P 5 2M 1M", "write -P 6 60M 4M")
    return ids, [full, inc1, inc2]


async def test_a_merged_child_reads_as_before_and_its_own_child_too(points):
    ids, (full, inc1, inc2) = points
    before = {p: verify_chain(p, SIZE) for p in (inc1, inc2)}
    full_sha, own = sha(full), allocated_bytes(inc1)

    merged = await merge_disk(str(full), str(inc1), ids[0], "disk0")

    assert merged == own > 0
    assert {p: verify_chain(p, SIZE) for p in (inc1, inc2)} == before
    assert await backing_file(inc1) is None
    assert await backing_file(inc2) == str(inc1)
    assert sha(full) == full_sha
    for p in (inc1, inc2):
        check_clean(p)
    assert list(inc1.parent.glob(".merge-*")) == []


async def test_merging_into_an_incremental_keeps_the_points_backing_file(points):
    ids, (full, inc1, inc2) = points
    before = verify_chain(inc2, SIZE)
    await merge_disk(str(inc1), str(inc2), ids[1], "disk0")
    assert await backing_file(inc2) == str(full)
    assert verify_chain(inc2, SIZE) == before


async def test_a_journaled_merge_redoes_only_the_disks_not_yet_renamed(points):
    ids, (full, inc1, _) = points
    before = verify_chain(inc1, SIZE)
    journal = {"point": ids[0], "disks": [
        {"disk_id": "disk0", "point": str(full), "child": str(inc1), "backing": None}]}  # fmt: skip
    assert await merge_disks(journal) > 0
    # Once renamed, the child no longer backs onto the point: a second pass does nothing.
    renamed = inc1.stat().st_ino
    assert await merge_disks(journal) == 0
    assert inc1.stat().st_ino == renamed
    assert verify_chain(inc1, SIZE) == before


async def test_a_child_that_is_not_what_the_journal_says_is_refused(points):
    ids, (full, _, inc2) = points
    journal = {"point": ids[0], "disks": [
        {"disk_id": "disk0", "point": str(full), "child": str(inc2), "backing": None}]}  # fmt: skip
    with pytest.raises(MergeError, match=r"backs onto .* neither"):
        await merge_disks(journal)


async def test_a_failed_merge_leaves_the_child_and_no_temporary_file(points, tmp_path):
    ids, (_, inc1, inc2) = points
    before, reads = sha(inc1), verify_chain(inc2, SIZE)
    with pytest.raises(Exception, match="cp failed"):
        await merge_disk(str(tmp_path / "missing.qcow2"), str(inc1), ids[0], "disk0")
    assert sha(inc1) == before
    assert list(inc1.parent.glob(".merge-*")) == []
    assert verify_chain(inc2, SIZE) == reads


async def test_a_killed_merges_temporary_files_go_and_nothing_else(points):
    ids, (full, inc1, _) = points
    journal = {"point": ids[0], "disks": [
        {"disk_id": "disk0", "point": str(full), "child": str(inc1), "backing": None}]}  # fmt: skip
    temps = [inc1.parent / f".merge-{ids[0]}.disk0.{end}" for end in ("base", "top")]
    for tmp in temps:
        tmp.write_bytes(b"half a copy")
    other = inc1.parent / ".merge-someone-else.disk0.base"
    other.write_bytes(b"not this merge's")
    remove_temps(journal)
    assert [t.exists() for t in temps] == [False, False]
    assert other.exists() and inc1.exists() and full.exists()
