"""Many disks copied at once in one process under one small memory budget: real nbdkit
sources, real qemu-nbd qcow2 targets, qemu-img compare as the judge."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest

from sendense_tools.nbd.buffers import MIN_BUDGET, MemoryBudget
from sendense_tools.nbd.copy import CopyCancelled, CopyError, CopyProgress, copy_disk
from tests.integration.nbd_engine.servers import copy_threads, make_sparse_disk, nbdkit_file
from tests.integration.nbd_engine.test_nbd_copy import wait_until

DISKS = 16
SIZE = 24 << 20


def vm_rss() -> int:
    """This process's resident memory now, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def sample_rss(into: list[int]) -> None:
    while True:
        into.append(vm_rss())
        await asyncio.sleep(0.05)


def same_content(raw: Path, qcow2: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(qcow2)],
        capture_output=True,
        text=True,
    )


async def test_sixteen_disks_at_once_stay_in_budget_and_give_the_memory_back(make_target, tmp_path):
    budget = MemoryBudget(MIN_BUDGET)
    raws = [tmp_path / f"disk{i}.raw" for i in range(DISKS)]
    for i, raw in enumerate(raws):
        make_sparse_disk(raw, SIZE, seed=100 + i)
    targets = [make_target(SIZE) for _ in raws]
    with contextlib.ExitStack() as servers:
        sources = [servers.enter_context(nbdkit_file(raw, tmp_path)) for raw in raws]
        # One copy first, so that what any copy loads once (libnbd, thread pools) is in the
        # baseline; then all at once, each wanting 80 MiB of a 128 MiB budget.
        await copy_disk("warm-up", sources[0], targets[0].endpoint, budget=budget)
        before = vm_rss()
        during = [before]
        sampler = asyncio.create_task(sample_rss(during))
        results = await asyncio.gather(
            *(
                copy_disk(f"disk{i}", src, target.endpoint, budget=budget)
                for i, (src, target) in enumerate(zip(sources, targets, strict=True))
            )
        )
        sampler.cancel()
        after = vm_rss()
    for target in targets:
        target.stop()
    for raw, target, result in zip(raws, targets, results, strict=True):
        compared = same_content(raw, target.image)
        assert compared.returncode == 0, f"{result.disk_id}: {compared.stdout}{compared.stderr}"
    assert budget.peak_bytes <= MIN_BUDGET, f"buffers peaked at {budget.peak_bytes} bytes"
    # The disks did contend for it: without a budget they would have held 16 x 80 MiB.
    assert budget.peak_bytes >= MIN_BUDGET // 2, f"buffers peaked at {budget.peak_bytes} bytes"
    assert budget.used_bytes == 0
    # Loose: what malloc keeps of other allocations (the 4 MiB blocks of the block hash)
    # stays; the buffers must not (before they were freed, all 16 x 80 MiB stayed).
    grew, rose = (after - before) >> 20, (max(during) - before) >> 20
    assert grew < rose / 2, f"RSS rose {rose} MiB during the copies and stayed {grew} MiB up"
    assert not copy_threads()


async def test_a_cancelled_copy_gives_its_buffers_back(make_target, tmp_path):
    budget = MemoryBudget(MIN_BUDGET)
    raw = tmp_path / "disk.raw"
    make_sparse_disk(raw, SIZE * 2, seed=7)
    target = make_target(SIZE * 2, slow=True)
    seen: list[CopyProgress] = []
    cancel = asyncio.Event()
    with nbdkit_file(raw, tmp_path) as src:
        task = asyncio.create_task(
            copy_disk("disk0", src, target.endpoint, cancel=cancel, budget=budget,
                      on_progress=seen.append)
        )  # fmt: skip
        await wait_until(lambda: seen and seen[-1].bytes_done > 0)
        assert budget.used_bytes > 0
        cancel.set()
        with pytest.raises(CopyCancelled):
            await task
    assert budget.used_bytes == 0
    assert not copy_threads()


async def test_a_failed_copy_gives_its_buffers_back(make_target, tmp_path):
    budget = MemoryBudget(MIN_BUDGET)
    raw = tmp_path / "disk.raw"
    make_sparse_disk(raw, SIZE * 2, seed=8)
    target = make_target(SIZE * 2, slow=True)
    seen: list[CopyProgress] = []
    with nbdkit_file(raw, tmp_path) as src:
        task = asyncio.create_task(
            copy_disk("disk0", src, target.endpoint, retry_for=1, budget=budget,
                      on_progress=seen.append)
        )  # fmt: skip
        await wait_until(lambda: seen and seen[-1].bytes_done > 0)
        target.kill()
        # While it waits to reconnect it holds nothing: the next copy may use it all.
        await wait_until(lambda: budget.used_bytes == 0)
        with pytest.raises(CopyError, match="gave up"):
            await task
    assert budget.used_bytes == 0
    assert not copy_threads()
