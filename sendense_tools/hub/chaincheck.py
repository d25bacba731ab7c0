"""Whether a restore point's files are all there, sound, and the chain the records name.

Run before a restore takes any slot or tells the node anything: a point whose
chain is broken must be refused before anything is created in vCenter.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from sendense_tools.hub.errors import ChainBroken
from sendense_tools.hub.store import Store

# qemu-img check: 0 clean, 3 leaked clusters only (space lost, no data wrong).
SOUND = (0, 3)


def expected_chains(store: Store, backup_id: str) -> dict[str, list[Path]]:
    """Per disk of the point, its files as the records name them: the point's own first."""
    records = store.chain(backup_id)
    if not records or records[-1]["id"] != backup_id:
        raise ChainBroken(f"backup {backup_id} has no record")
    if records[0]["parent"] is not None:
        raise ChainBroken(
            f"backup {records[0]['id']} builds on backup {records[0]['parent']}, "
            "which has no record"
        )
    chains: dict[str, list[Path]] = {}
    for disk in records[-1]["disk_results"]:
        paths = []
        for record in reversed(records):
            found = [d for d in record["disk_results"] if d["disk_id"] == disk["disk_id"]]
            if not found or not found[0]["qcow2_path"]:
                raise ChainBroken(f"backup {record['id']} has no image of {disk['disk_id']}")
            paths.append(Path(found[0]["qcow2_path"]))
        chains[disk["disk_id"]] = paths
    return chains


async def qemu_img(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _reason(out: str, err: str) -> str:
    """qemu-img's verdict in one line: how many errors `check` found and the first one,
    or its own message when it could not even open the image."""
    lines = [line.strip() for line in f"{err}\n{out}".splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return f"{len(errors)} errors, the first: {errors[0].removeprefix('ERROR').lstrip(': ')}"
    return lines[-1].removeprefix("qemu-img: ") if lines else "no reason given"


async def check_file(path: Path) -> None:
    """`qemu-img check` of one image (-U: a running restore may be reading it)."""
    if not await asyncio.to_thread(path.is_file):
        raise ChainBroken(f"{path}: missing")
    rc, out, err = await qemu_img("check", "-U", "-q", "-f", "qcow2", str(path))
    if rc not in SOUND:
        raise ChainBroken(f"{path}: damaged: {_reason(out, err)}")


async def check_backing(paths: list[Path]) -> None:
    """`qemu-img info --backing-chain` of the top image names exactly `paths`."""
    top = paths[0]
    rc, out, err = await qemu_img(
        "info", "-U", "--backing-chain", "--output=json", "-f", "qcow2", str(top)
    )
    if rc != 0:
        raise ChainBroken(f"{top}: unreadable chain: {_reason(out, err)}")
    try:
        found = [str(image["filename"]) for image in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        raise ChainBroken(f"{top}: qemu-img described its chain in an unknown form") from None
    # The repository's paths are absolute, and qemu-img names each image as recorded.
    want = [str(p) for p in paths]
    if found != want:
        raise ChainBroken(
            f"{top}: its backing chain is {' <- '.join(found)}, "
            f"the records name {' <- '.join(want)}"
        )


async def check_chain(store: Store, backup_id: str) -> dict[str, Path]:
    """Every file of the point's chain exists, passes `qemu-img check`, and links up as
    the records say; each disk's top image (what a restore exports). ChainBroken if not."""
    chains = expected_chains(store, backup_id)
    for paths in chains.values():
        # Base first: checking an overlay opens its backing files too, so the first
        # image that fails is the damaged one.
        for path in reversed(paths):
            await check_file(path)
        await check_backing(paths)
    return {disk_id: paths[0] for disk_id, paths in chains.items()}
