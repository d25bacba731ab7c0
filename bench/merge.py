"""Prune's merge of a point into its child (hub/merge.py): a 1 GiB full whose child
overlay holds 100 MiB of changes (scattered 1 MiB writes), made with qemu-img/qemu-io.

Printed: the merge's wall time and merged bytes, against the two ways qemu-img offers
in place (neither crash-safe: an interrupted commit damages the base, DESIGN
"Schedules and retention"): `qemu-img commit` of the child into the full, and
`qemu-img convert` of the child's whole chain into a new standalone image.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sendense_tools.hub.merge import merge_disk

MIB = 1024**2
GIB = 1024 * MIB
CHANGED = 100  # MiB, one MiB every 10


def _qemu_io(path: Path, *commands: str) -> None:
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(path)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def make_chain(where: Path) -> tuple[Path, Path]:
    point, child = where / "point" / "disk0.qcow2", where / "child" / "disk0.qcow2"
    point.parent.mkdir()
    child.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(point), str(GIB)], check=True)
    _qemu_io(point, *(f"write -P {i % 250 + 1} {i * 64}M 64M" for i in range(GIB // (64 * MIB))))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(point), "-F", "qcow2",
                    str(child)], check=True)  # fmt: skip
    _qemu_io(child, *(f"write -P 7 {i * 10}M 1M" for i in range(CHANGED)))
    return point, child


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True)
    return time.monotonic() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sendense-bench-merge-"))
    try:
        point, child = make_chain(work)
        reference = work / "flat.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(child), str(reference)],
                       check=True)  # fmt: skip
        pristine = work / "pristine"
        shutil.copytree(work / "point", pristine / "point")
        shutil.copytree(work / "child", pristine / "child")

        started = time.monotonic()
        merged = asyncio.run(merge_disk(str(point), str(child), "bench", "disk0"))
        ours = time.monotonic() - started
        same = subprocess.run(["qemu-img", "compare", "-F", "raw", str(child), str(reference)],
                              capture_output=True).returncode == 0  # fmt: skip

        for name in ("point", "child"):
            shutil.rmtree(work / name)
            shutil.copytree(pristine / name, work / name)
        commit = _timed(["qemu-img", "commit", "-q", str(child)])
        for name in ("point", "child"):
            shutil.rmtree(work / name)
            shutil.copytree(pristine / name, work / name)
        convert = _timed(["qemu-img", "convert", "-O", "qcow2", str(child), str(work / "c.qcow2")])

        print(
            f"merge of a 1 GiB full into its child ({CHANGED} MiB changed): {ours:.2f} s,"
            f" {merged / MIB:.1f} MiB merged, reads as before: {'yes' if same else 'NO'}"
        )
        print(
            f"  in-place qemu-img commit (not crash-safe): {commit:.2f} s"
            f" -> ours / commit = {ours / commit:.2f}"
        )
        print(f"  qemu-img convert of the chain: {convert:.2f} s"
              f" -> ours / convert = {ours / convert:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
