"""The chain check against real qcow2 files and the records of a real Store."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from sendense_tools.hub.chaincheck import check_chain
from sendense_tools.hub.errors import ChainBroken
from sendense_tools.hub.store import Store

MiB = 1 << 20


def point(store: Store, job_id: str, path: Path, parent: str | None = None) -> None:
    store.create_job(
        {"id": job_id, "vm": "web", "node": "n1", "nbd_targets": "", "parent": parent},
        [{"disk_id": "disk0", "capacity": MiB, "nbd_port": 1, "export_name": "e",
          "qcow2_path": str(path)}],
    )  # fmt: skip
    store.release_allocations(job_id)
    store.set_status(job_id, "completed")


@pytest.fixture
def points(tmp_path, chain):
    """A full and an incremental on it, as the records and the files say."""
    store = Store(tmp_path / "hub.db")
    full = chain.create("full.qcow2", MiB)
    inc = chain.create("inc.qcow2", backing=full)
    point(store, "full", full)
    point(store, "inc", inc, parent="full")
    yield store, full, inc
    store.close()


def check(store: Store, backup_id: str) -> dict[str, Path]:
    return asyncio.run(check_chain(store, backup_id))


def test_a_sound_chain_gives_each_disks_top_image(points):
    store, full, inc = points
    assert check(store, "inc") == {"disk0": inc}
    assert check(store, "full") == {"disk0": full}


def test_a_missing_base_is_named(points):
    store, full, _ = points
    full.unlink()
    with pytest.raises(ChainBroken, match=rf"^{full}: missing$"):
        check(store, "inc")


def test_a_truncated_base_is_damaged(points):
    store, full, _ = points
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 512k", str(full)],
                   check=True, capture_output=True)  # fmt: skip
    os.truncate(full, full.stat().st_size // 2)
    with pytest.raises(
        ChainBroken, match=rf"^{full}: damaged: \d+ errors, the first: counting reference"
    ):
        check(store, "inc")


def test_a_corrupt_header_is_damaged_with_qemus_reason(points):
    store, _, inc = points
    with inc.open("r+b") as f:
        f.write(b"QFI\x00")
    with pytest.raises(
        ChainBroken,
        match=rf"^{inc}: damaged: Could not open '{inc}': Image is not in qcow2 format$",
    ):
        check(store, "inc")


def test_an_overlay_on_another_base_than_the_records_say_is_broken(points, chain):
    store, full, inc = points
    other = chain.create("other.qcow2", MiB)
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(other), "-F", "qcow2",
                    str(inc)], check=True)  # fmt: skip
    with pytest.raises(ChainBroken) as caught:
        check(store, "inc")
    assert str(caught.value) == (
        f"{inc}: its backing chain is {inc} <- {other}, the records name {inc} <- {full}"
    )


def test_a_parent_without_a_record_is_broken(tmp_path, chain):
    store = Store(tmp_path / "hub.db")
    point(store, "inc", chain.create("inc.qcow2", MiB), parent="gone")
    with pytest.raises(
        ChainBroken, match=r"^backup inc builds on backup gone, which has no record$"
    ):
        check(store, "inc")
    store.close()
