"""Checksum cost: the DESIGN's block hash (nbd/blkhash.py) against today's SHA-256 of the
whole disk, on the same images read the same way (a private qemu-nbd, as the hub does).

Two 2 GiB sparse raw disks: ~1.3 GB of data, and a tenth of that. SHA-256 hashes every byte,
zeroes included, on one thread; the block hash skips zero blocks by extents and hashes data
blocks on a thread pool. Prints median seconds, capacity per second and sha256/blkhash (higher
is better); the block hash is cross-checked against ovirt-imageio once per disk.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ovirt_imageio import client

from bench.copy import DATA, SIZE, make_disk
from sendense_tools.nbd import blkhash
from sendense_tools.nbd.digest import sha256_of_image

ROUNDS = 3


def timed(run: Callable[[], object]) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sendense-bench-") as tmp:
        disks = {"full": Path(tmp, "full.raw"), "10% allocated": Path(tmp, "tenth.raw")}
        t = time.perf_counter()
        make_disk(disks["full"], SIZE, DATA)
        make_disk(disks["10% allocated"], SIZE, DATA // 10, seed=11)
        print(f"sources: 2 GiB disks, ~1.3 GB and ~0.13 GB data ({time.perf_counter() - t:.1f} s)")
        for path in disks.values():
            ours = blkhash.checksum_of_digests(blkhash.image_block_digests(path, SIZE))
            if ours != client.checksum(str(path)):
                raise RuntimeError(f"{path.name}: block hash differs from ovirt-imageio's")
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(ROUNDS):
            for name, path in disks.items():
                cases = {
                    "sha256": lambda p=path: sha256_of_image(p, fmt="raw"),
                    "blkhash": lambda p=path: blkhash.image_block_digests(p, SIZE),
                }
                for algo, run in cases.items():
                    times.setdefault((name, algo), []).append(timed(run))
    print(f"{'disk':14} {'hash':8} {'median s':>9} {'GiB/s of capacity':>18} {'runs':>18}")
    for (name, algo), runs in times.items():
        med = statistics.median(runs)
        shown = " ".join(f"{r:.2f}" for r in runs)
        print(f"{name:14} {algo:8} {med:9.2f} {SIZE / med / (1 << 30):18.2f} {shown:>18}")
    for name in disks:
        sha = statistics.median(times[(name, "sha256")])
        blk = statistics.median(times[(name, "blkhash")])
        print(f"{name}: blkhash is {sha / blk:.2f}x as fast as sha256")
    full = statistics.median(times[("full", "blkhash")])
    tenth = statistics.median(times[("10% allocated", "blkhash")])
    print(f"blkhash, 10% allocated / full: {tenth / full:.2f} (cost follows the data)")


if __name__ == "__main__":
    main()
