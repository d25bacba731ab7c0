"""A cancel while the node probes a new nbdkit that does not answer (vCenter's
download hanging) must end at once, without freezing the event loop: the API,
the heartbeats and the other disks' copies share it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sendense_tools.nbd import sources

# The probe's NBD open then waits 60 s inside nbdkit, as a hung curl request would.
HUNG_OPEN = ["--filter=delay", "memory", "1M", "delay-open=60"]


def _nbdkit_pids_under(directory: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"nbdkit")
            and str(directory).encode() in b" ".join(cmdline)
        ):
            pids.append(int(entry))
    return pids


async def test_cancel_during_a_hung_probe_returns_without_blocking_the_loop(tmp_path: Path):
    started: list[Path] = []

    def build(directory: Path) -> list[str]:
        started.append(directory)
        return HUNG_OPEN

    async def open_source() -> None:
        async with sources._serve("hung source", build):
            raise AssertionError("the probe of a hung nbdkit returned")

    task = asyncio.create_task(open_source())
    # Wait until nbdkit runs and the probe is blocked in its open.
    for _ in range(500):
        if started and (started[0] / "nbdkit.pid").exists():
            break
        await asyncio.sleep(0.01)
    assert started and (started[0] / "nbdkit.pid").exists(), "nbdkit did not start"
    await asyncio.sleep(0.3)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(ticker())
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), 20)
    except asyncio.CancelledError:
        pass
    finally:
        beat.cancel()
    assert task.cancelled()
    # A loop frozen by a join on the blocked probe would not have ticked at all.
    assert ticks > 0
    assert _nbdkit_pids_under(started[0]) == []
    assert not started[0].exists()
