"""The node's memory budget: peak RSS of the copy process for 1, 10 and 101 disks at once,
and one disk's throughput with the budget vs without.

Real parts, direct (no vCenter, no tunnel): one nbdkit file server holds a 64 MiB sparse
disk with ~60% data, every disk copies it into its own fresh qcow2 served by qemu-nbd with
the hub's options. Each case runs in a fresh process (bench/_memory_child.py) so that its
VmHWM is the peak of that case alone: with the default budget ([backup] memory_budget,
1 GiB) and with no budget (every disk its full 80 MiB pool, what each copy had before).
The throughput figure alternates the two set-ups on a 1 GiB disk (rounds A, B, A, B) and
compares medians.

Environment: BENCH_MEMORY_ROUNDS (5), BENCH_MEMORY_DISKS ("1,10,101"),
BENCH_MEMORY_OLD_101=1 to also run 101 disks without a budget (up to ~8 GiB of RAM).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.copy import HUB_OPTIONS, make_disk, qcow2_target
from sendense_tools.nbd.buffers import DEFAULT_BUDGET

MIB = 1 << 20
DISK = 64 * MIB
BIG_DISK = 1024 * MIB
ROOT = Path(__file__).resolve().parents[1]
# The hub's options but thread AIO: each qemu-nbd with --aio=native takes 1024 of the host's
# fs.aio-max-nr (65536 by default), so past 64 of them the next one fails to start. The
# target's AIO mode does not change what the copy process holds.
TARGET_OPTIONS = [o if o != "--aio=native" else "--aio=threads" for o in HUB_OPTIONS]


def nbdkit_file(path: Path, sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["nbdkit", "-f", "--exit-with-parent", "-r", "-U", str(sock), "file", str(path)]
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nbdkit for {path} did not start")
        time.sleep(0.02)
    return proc


def run_case(workdir: Path, source: str, sha256: str, size: int, disks: int, budget: int) -> dict:
    """`disks` copies at once in a fresh process, each into its own fresh qcow2."""
    with contextlib.ExitStack() as stack:
        targets = []
        for i in range(disks):
            where = workdir / f"t{i}"
            where.mkdir(exist_ok=True)
            targets.append(stack.enter_context(qcow2_target(where, size, TARGET_OPTIONS)))
        spec = {"source": source, "targets": targets, "sha256": sha256, "budget": budget}
        proc = subprocess.run(
            [sys.executable, "-m", "bench._memory_child", json.dumps(spec)],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{disks} disks, budget {budget}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB"


def main() -> None:
    rounds = int(os.environ.get("BENCH_MEMORY_ROUNDS", "5"))
    counts = [int(n) for n in os.environ.get("BENCH_MEMORY_DISKS", "1,10,101").split(",")]
    old_101 = os.environ.get("BENCH_MEMORY_OLD_101") == "1"
    with tempfile.TemporaryDirectory(prefix="sendense-bench-memory-") as tmp:
        workdir = Path(tmp)
        small_sha = make_disk(workdir / "small.raw", DISK, DISK * 6 // 10, seed=3)
        big_sha = make_disk(workdir / "big.raw", BIG_DISK, BIG_DISK * 6 // 10, seed=4)
        servers = [
            nbdkit_file(workdir / f"{n}.raw", workdir / f"{n}.sock") for n in ("small", "big")
        ]
        small = f"nbd+unix:///?socket={workdir / 'small.sock'}"
        big = f"nbd+unix:///?socket={workdir / 'big.sock'}"
        try:
            peaks = {}
            for n in counts:
                peaks[(n, "budget")] = run_case(workdir, small, small_sha, DISK, n, DEFAULT_BUDGET)
                if n < 101 or old_101:
                    peaks[(n, "none")] = run_case(workdir, small, small_sha, DISK, n, 0)
            times: dict[str, list[float]] = {"budget": [], "none": []}
            for _ in range(rounds):
                for name, budget in (("budget", DEFAULT_BUDGET), ("none", 0)):
                    result = run_case(workdir, big, big_sha, BIG_DISK, 1, budget)
                    times[name].append(result["seconds"])
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait()
    print(f"disks: {mib(DISK)} each, ~60% data; budget {mib(DEFAULT_BUDGET)} (the default)")
    for n in counts:
        with_budget = peaks[(n, "budget")]
        line = (
            f"peak RSS, {n} disk{'s' if n > 1 else ''} at once: {mib(with_budget['hwm'])} with "
            f"the budget (buffers peaked at {mib(with_budget['peak_buffers'])}; "
            f"{mib(with_budget['end_rss'])} after, {mib(with_budget['start_rss'])} before)"
        )
        without = peaks.get((n, "none"))
        if without is not None:
            line += (
                f" vs {mib(without['hwm'])} with no budget "
                f"({with_budget['hwm'] / without['hwm']:.2f}x)"
            )
        print(line)
    a, b = statistics.median(times["budget"]), statistics.median(times["none"])
    pairs = zip(times["budget"], times["none"], strict=True)
    shown = " ".join(f"{x:.2f}/{y:.2f}" for x, y in pairs)
    print(
        f"one-disk throughput with the budget / without: {b / a:.2f}x (goal >= 0.97; "
        f"1 GiB disk, median {a:.2f} s vs {b:.2f} s; rounds {shown})"
    )


if __name__ == "__main__":
    main()
