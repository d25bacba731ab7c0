"""Merging a pruned point into its child, crash-safe, one disk at a time.

Per disk, nothing that a remaining point reads is written in place: the point's qcow2
is copied into the child's folder, the child's qcow2 is copied too and rebased (-u)
onto that copy, the child's copy is committed into it (which makes it the child's
whole view, backed by the point's own backing file, if any), and the result is
fsynced and renamed over the child's qcow2. The child keeps its path, so its own
children and its `.blocks` stay valid, and at every instant it reads the same bytes.

A journal row (`merges`) is written before the first disk; a disk whose qcow2 no
longer backs onto the point's is recognized as done, so a restart redoes only the
disks not yet renamed, after removing the temporary files (`.merge-*`) a killed
merge left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from sendense_tools.durable import replace_durably
from sendense_tools.hub.chaincheck import qemu_img
from sendense_tools.hub.errors import HubError
from sendense_tools.hub.images import ImageError, run_tool

log = logging.getLogger(__name__)

TEMP_PREFIX = ".merge-"


class MergeError(HubError):
    """A merge that cannot go on as journaled (the files are not what the journal says)."""


def allocated_bytes(path: str | Path) -> int:
    """What a file takes on disk (its allocated blocks), 0 when it is gone."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


async def backing_file(path: str | Path) -> str | None:
    """An image's backing file as recorded in it (-U: a restore may be reading it)."""
    rc, out, err = await qemu_img("info", "-U", "--output=json", "-f", "qcow2", str(path))
    if rc != 0:
        raise ImageError(f"qemu-img info {path}: {err.strip() or rc}")
    return json.loads(out).get("backing-filename")


def _temps(child: Path, point_id: str, disk_id: str) -> tuple[Path, Path]:
    stem = f"{TEMP_PREFIX}{point_id}.{disk_id}"
    return child.parent / f"{stem}.base", child.parent / f"{stem}.top"


def _fsync_into_place(tmp: Path, target: Path) -> None:
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    replace_durably(tmp, target)


async def merge_disk(point_qcow2: str, child_qcow2: str, point_id: str, disk_id: str) -> int:
    """Make the child's qcow2 hold the point's data under its own; the merged bytes
    (what the child's overlay held). The point's file is left as it was."""
    child = Path(child_qcow2)
    base, top = _temps(child, point_id, disk_id)
    merged = allocated_bytes(child)
    try:
        for src, dst in ((point_qcow2, base), (child_qcow2, top)):
            await run_tool("cp", "--sparse=always", "--reflink=auto", src, str(dst))
        await run_tool(
            "qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
            str(top),
        )  # fmt: skip
        await run_tool("qemu-img", "commit", "-q", "-f", "qcow2", str(top))
        await asyncio.to_thread(_fsync_into_place, base, child)
    finally:
        for tmp in (base, top):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return merged


async def merge_disks(journal: dict[str, Any]) -> int:
    """Every disk of a journaled merge not yet done; the bytes merged now."""
    merged = 0
    for disk in journal["disks"]:
        now = await backing_file(disk["child"])
        if now == disk["backing"]:
            continue  # renamed into place before the crash
        if now != disk["point"]:
            raise MergeError(
                f"{disk['child']} backs onto {now}, neither the merged point's "
                f"{disk['point']} nor its backing file {disk['backing']}"
            )
        merged += await merge_disk(disk["point"], disk["child"], journal["point"], disk["disk_id"])
    return merged


def remove_temps(journal: dict[str, Any]) -> None:
    """The temporary files a killed merge of `journal` may have left."""
    for disk in journal["disks"]:
        for tmp in _temps(Path(disk["child"]), journal["point"], disk["disk_id"]):
            tmp.unlink(missing_ok=True)
