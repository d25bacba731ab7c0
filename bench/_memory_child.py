"""One case of bench/memory.py in a fresh process: copy N disks at once, print what the
process's memory did as JSON (VmHWM is the peak of this process alone)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from sendense_tools.nbd.buffers import MemoryBudget, configure
from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint

UNBOUNDED = 1 << 50  # every disk its full pool: memory as before there was a budget


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


async def copy_all(source: str, targets: list[str], budget: MemoryBudget) -> list:
    return await asyncio.gather(
        *(
            copy_disk(f"disk{i}", NbdEndpoint(source), NbdEndpoint(t), budget=budget)
            for i, t in enumerate(targets)
        )
    )


def main(spec: dict) -> dict:
    # The budget as the node sets it up (configure), or none at all, as before.
    budget = configure(spec["budget"]) if spec["budget"] else MemoryBudget(UNBOUNDED)
    start_rss = status("VmRSS")
    started = time.perf_counter()
    results = asyncio.run(copy_all(spec["source"], spec["targets"], budget))
    seconds = time.perf_counter() - started
    wrong = [r.disk_id for r in results if r.sha256 != spec["sha256"]]
    if wrong:
        raise SystemExit(f"SHA-256 mismatch: {', '.join(wrong)}")
    return {
        "seconds": seconds,
        "start_rss": start_rss,
        "hwm": status("VmHWM"),
        "end_rss": status("VmRSS"),
        "peak_buffers": budget.peak_bytes,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
