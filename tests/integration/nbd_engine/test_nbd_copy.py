"""copy_disk against real nbdkit sources and qemu-nbd qcow2 targets (libnbd, no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import pytest

from sendense_tools.nbd import disk_copy
from sendense_tools.nbd.copy import CopyCancelled, CopyError, CopyProgress, copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk
from sendense_tools.nbd.sources import file_source
from tests.fixtures.ports import free_port
from tests.integration.nbd_engine.servers import copy_threads


def _own_threads() -> set[str]:
    """Live threads but asyncio's own: the default executor keeps idle workers
    until the loop closes, and the child watcher's "waitpid-N" thread lives on
    for a moment after it has reported nbdkit's exit."""
    return {
        t.name for t in threading.enumerate() if not t.name.startswith(("asyncio_", "waitpid-"))
    }


async def wait_until(predicate) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("connections", [1, 2, 4])
async def test_copy_is_bit_identical_and_skips_holes(source_disk, make_target, connections):
    target = make_target(source_disk.size)
    progress: list[CopyProgress] = []
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk(
            "disk0", src, target.endpoint, connections=connections, on_progress=progress.append
        )
    assert result.sha256 == source_disk.sha256
    target.stop()
    assert target.sha256() == source_disk.sha256
    assert result.capacity == source_disk.size
    assert result.bytes_copied + result.bytes_zero == source_disk.size
    assert 0 < result.bytes_copied < source_disk.size * 0.7  # holes and zero data not written
    assert result.retries == 0
    done = [p.bytes_done for p in progress]
    assert done == sorted(done) and done[-1] == source_disk.size


async def test_copy_writes_zeroes_on_a_used_target(source_disk, make_target, tmp_path):
    target = make_target(source_disk.size)
    # fill the target with random bytes first, so skipping zero ranges would show
    fill = await asyncio.create_subprocess_exec(
        *("nbdcopy", "--", "[", "nbdkit", "random", str(source_disk.size), "]"),
        f"nbd://127.0.0.1:{target.port}/disk",
    )
    assert await fill.wait() == 0
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk("disk0", src, target.endpoint, target_is_zero=False)
    target.stop()
    assert result.sha256 == source_disk.sha256 == target.sha256()


async def test_copy_survives_target_restart(source_disk, make_target, tmp_path, monkeypatch):
    # small checkpoints so that the resume point is somewhere in the middle
    monkeypatch.setattr(disk_copy, "CHECKPOINT_BYTES", 4 << 20)
    target = make_target(source_disk.size, slow=True)
    seen: list[int] = []
    async with file_source(str(source_disk.path)) as src:
        task = asyncio.create_task(
            copy_disk(
                "disk0",
                src,
                target.endpoint,
                connections=2,
                retry_for=60,
                on_progress=lambda p: seen.append(p.bytes_done),
            )
        )
        await wait_until(lambda: seen and seen[-1] > source_disk.size // 4)
        target.kill()  # SIGKILL: unflushed writes are lost, the port refuses
        await asyncio.sleep(2)
        target.start()
        result = await task
    assert result.retries > 0
    assert result.sha256 == source_disk.sha256
    target.stop()
    assert target.sha256() == source_disk.sha256


async def test_permanent_outage_gives_up_after_retry_for(source_disk, make_target, tmp_path):
    target = make_target(source_disk.size, slow=True)
    seen: list[int] = []
    async with file_source(str(source_disk.path)) as src:
        task = asyncio.create_task(
            copy_disk(
                "disk7",
                src,
                target.endpoint,
                retry_for=2,
                on_progress=lambda p: seen.append(p.bytes_done),
            )
        )
        await wait_until(lambda: seen and seen[-1] > 0)
        target.kill()
        with pytest.raises(CopyError) as err:
            await task
    message = str(err.value)
    assert message.startswith("disk7: ")
    assert "Connection refused" in message and "gave up" in message
    assert "\n" not in message
    assert not copy_threads()


async def test_a_source_whose_nbdkit_died_fails_at_once_not_after_retry_for(
    source_disk, make_target
):
    # Retrying is for the tunnel; the node's own nbdkit does not come back.
    target = make_target(source_disk.size, slow=True)
    seen: list[int] = []
    async with file_source(str(source_disk.path)) as src:
        task = asyncio.create_task(
            copy_disk(
                "disk3",
                src,
                target.endpoint,
                retry_for=300,
                on_progress=lambda p: seen.append(p.bytes_done),
            )
        )
        await wait_until(lambda: seen and seen[-1] > 0)
        pid = int((Path(src.address.socket).parent / "nbdkit.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(CopyError) as err:
            await asyncio.wait_for(task, 60)
    message = str(err.value)
    assert message.startswith("disk3: file source ") and "nbdkit killed by SIGKILL" in message
    assert "\n" not in message
    assert not copy_threads()


async def test_cancel_stops_promptly_and_leaves_no_threads(source_disk, make_target, tmp_path):
    target = make_target(source_disk.size, slow=True)
    cancel = asyncio.Event()
    seen: list[int] = []
    before = _own_threads()
    async with file_source(str(source_disk.path)) as src:
        task = asyncio.create_task(
            copy_disk(
                "disk0",
                src,
                target.endpoint,
                cancel=cancel,
                on_progress=lambda p: seen.append(p.bytes_done),
            )
        )
        await wait_until(lambda: seen and seen[-1] > 0)
        cancel.set()
        with pytest.raises(CopyCancelled):
            await task
    assert seen[-1] < source_disk.size  # it did stop before the end
    assert not copy_threads()
    assert _own_threads() == before


async def test_tls_psk_target(source_disk, make_target):
    target = make_target(source_disk.size, tls=True)
    async with file_source(str(source_disk.path)) as src:
        result = await copy_disk("disk0", src, target.endpoint)
        assert result.sha256 == source_disk.sha256

        wrong = NbdEndpoint(target.endpoint.uri, TlsPsk(target.tls.username, "00" * 32))
        with pytest.raises(CopyError, match=r"^disk0: cannot connect to nbd://.*TLS"):
            await copy_disk("disk0", src, wrong, retry_for=60)

        plain = NbdEndpoint(target.endpoint.uri)
        with pytest.raises(CopyError, match="requires TLS"):
            await copy_disk("disk0", src, plain, retry_for=60)
    target.stop()
    assert target.sha256() == source_disk.sha256


async def test_unreachable_target_is_one_line_naming_disk_and_uri(source_disk):
    port = free_port()
    dead = NbdEndpoint(f"nbd://127.0.0.1:{port}/x")
    async with file_source(str(source_disk.path)) as src:
        with pytest.raises(CopyError) as err:
            await copy_disk("disk1", src, dead, retry_for=1)
    assert str(err.value).startswith(
        f"disk1: cannot connect to nbd://127.0.0.1:{port}/x: "
    ) and "Connection refused" in str(err.value)


async def test_target_smaller_than_disk_fails_at_once(source_disk, make_target):
    target = make_target(source_disk.size // 2)
    async with file_source(str(source_disk.path)) as src:
        with pytest.raises(CopyError, match=r"holds \d+ bytes, the disk has \d+"):
            await copy_disk("disk0", src, target.endpoint, retry_for=60)


async def test_file_source_removes_its_directory(source_disk):
    async with file_source(str(source_disk.path)) as src:
        sock = Path(src.address.socket)
        assert sock.is_socket()  # noqa: ASYNC240 - a stat, not I/O worth a thread
    assert not sock.parent.exists()
