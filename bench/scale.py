"""Many disks at once: 1, 10 and 101 disks backed up at the same time through one
tunnel and one hub (the stack of tests/integration/scale/, bigger disks).

Each case starts a fresh stack (hub, node, tunnel, sshd) so that its peak RSS is
its own, and the cases take turns round after round (1, 10, 101, 1, 10, 101, ...)
so drift hits them alike. Per case: wall time from the first POST to the last
backup ended (median), the aggregate throughput over the disks' capacity (what
the https transport reads), and the largest peak RSS of node, hub and tunnel,
each with its children (nbdkit sources, qemu-nbd exports), over the rounds.

Environment: BENCH_SCALE_DISKS ("1,10,101"), BENCH_SCALE_SIZE_MIB (32),
BENCH_SCALE_ROUNDS (2).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.fixtures.rss import MIB, Peak
from tests.fixtures.scale import (
    ScaleLab,
    assert_bit_identical,
    assert_nothing_left,
    back_up_at_once,
    scale_vcsim,
    split_disks,
)
from tests.fixtures.stack import running_stack

NAMES = ("node", "hub", "tunnel")


def _cases() -> list[int]:
    return [int(n) for n in os.environ.get("BENCH_SCALE_DISKS", "1,10,101").split(",")]


def _groups(cases: list[int]) -> list[list[int]]:
    """Each case's VMs as indexes into one simulator: its disks split over its own VMs."""
    groups, first = [], 0
    for n in cases:
        count = len(split_disks(n))
        groups.append(list(range(first, first + count)))
        first += count
    return groups


def run_case(case: ScaleLab, work: Path) -> tuple[float, dict[str, Peak]]:
    """Back up every VM of `case` at once on a stack of its own: wall time and peaks."""
    disks = sum(len(vm.disks) for vm in case.vms)
    base = Path(tempfile.mkdtemp(prefix="stack-", dir=work))
    try:
        with running_stack(case.lab, base, nbd_count=max(disks, 8)) as stack:
            fan = back_up_at_once(stack, case.vms, timeout=1800)
            # The checksums only: the hub already compared its re-read of every qcow2.
            assert_bit_identical(case, fan, stack, None)
            assert_nothing_left(case, stack)
        return fan.wall, fan.rss.peaks
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    cases = _cases()
    size = int(os.environ.get("BENCH_SCALE_SIZE_MIB", "32")) * MIB
    rounds = int(os.environ.get("BENCH_SCALE_ROUNDS", "2"))
    groups = _groups(cases)
    counts = [c for n in cases for c in split_disks(n)]
    work = Path(tempfile.mkdtemp(prefix="sendense-bench-scale-"))
    try:
        t0 = time.perf_counter()
        with scale_vcsim(counts, size, seed="bench-scale") as scale:
            print(
                f"{len(counts)} VMs, {sum(counts)} disks of {size // MIB} MiB seeded"
                f" in {time.perf_counter() - t0:.1f} s; {rounds} rounds"
            )
            walls: dict[int, list[float]] = {n: [] for n in cases}
            peaks: dict[int, dict[str, Peak]] = {n: {k: Peak() for k in NAMES} for n in cases}
            subsets = [ScaleLab(scale.lab, [scale.vms[i] for i in g], scale.seed) for g in groups]
            for r in range(rounds):
                for n, case in zip(cases, subsets, strict=True):
                    wall, rss = run_case(case, work)
                    walls[n].append(wall)
                    for k in NAMES:
                        if rss[k].tree_rss > peaks[n][k].tree_rss:
                            peaks[n][k] = rss[k]
                    print(f"  round {r + 1}: {n} disks {wall:.1f} s", flush=True)
        one = None
        for n, group in zip(cases, groups, strict=True):
            wall = statistics.median(walls[n])
            rate = n * size / wall / 1e6
            one = one or rate
            rss = ", ".join(
                f"{k} {peaks[n][k].tree_rss / MIB:.0f} MiB ({peaks[n][k].main_hwm / MIB:.0f} own)"
                for k in NAMES
            )
            print(
                f"scale {n} disks at once ({len(group)} VMs x {size // MIB} MiB): wall"
                f" {wall:.1f} s (runs {' '.join(f'{w:.1f}' for w in walls[n])}),"
                f" {rate:.0f} MB/s aggregate ({rate / one:.2f}x the {cases[0]}-disk case),"
                f" peak RSS {rss}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
