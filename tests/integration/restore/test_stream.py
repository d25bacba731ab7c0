"""restore/stream.py against a real qemu-nbd -r serving a qcow2 point."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.restore.stream import CHUNK, DiskStream, StreamError
from tests.fixtures.restores import MiB, NbdGate, write_point

CAPACITY = 64 * MiB


@pytest.fixture
def point(chain):
    base = write_point(chain, "base.qcow2", CAPACITY, {0: b"\x11" * (3 * MiB)})
    return write_point(chain, "top.qcow2", CAPACITY,
                       {40 * MiB + 4096: b"\x22" * (2 * MiB)}, backing=base)  # fmt: skip


def test_the_stream_is_the_point_in_order_and_zero_extents_are_not_read(chain, point):
    uri, _ = chain.serve(point, readonly=True)
    seen: list[int] = []
    stream = DiskStream("disk0", NbdEndpoint(uri), CAPACITY, on_progress=seen.append)
    data = b"".join(stream)
    assert data == chain.read(point)
    # Only the data extents crossed the connection: about 5 MiB of the 64.
    assert 5 * MiB <= stream.bytes_read < 16 * MiB
    assert seen == sorted(seen) and seen[-1] == CAPACITY
    assert max(b - a for a, b in zip([0, *seen], seen, strict=False)) <= CHUNK


def test_an_export_smaller_than_the_disk_is_an_error_naming_the_disk(chain, point):
    uri, _ = chain.serve(point, readonly=True)
    stream = DiskStream("disk3", NbdEndpoint(uri), CAPACITY + MiB, retry_for=1)
    with pytest.raises(StreamError, match=r"^disk3: export .* holds \d+ bytes, the disk has"):
        b"".join(stream)


def test_a_cancel_while_the_export_holds_its_replies_ends_the_stream_and_its_reader(chain, point):
    uri, _ = chain.serve(point, readonly=True)
    gate = NbdGate(uri).start()
    cancel = threading.Event()
    try:
        gate.hold_after(2 * MiB)
        stream = DiskStream("disk0", NbdEndpoint(gate.uri), CAPACITY, cancel=cancel)
        got = 0
        timer = threading.Timer(1.0, cancel.set)
        timer.start()
        with pytest.raises(StreamError, match="disk0: stopped"):
            for chunk in stream:
                got += len(chunk)
        assert got < CAPACITY
        deadline = time.monotonic() + 10
        while stream._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stream._thread.is_alive(), "the reader thread outlived the cancel"
    finally:
        gate.stop()


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def test_streaming_a_disk_does_not_keep_what_it_read(tmp_path):
    """libnbd 1.14 leaks a reference to every aio buffer: the stream must not keep its
    chunks alive through it (it used to hold the whole disk's data until the node exited)."""
    size = 256 * MiB
    sock = tmp_path / "pattern.sock"
    proc = subprocess.Popen(
        ["nbdkit", "-f", "--exit-with-parent", "-r", "-U", str(sock), "pattern", str(size)]
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "nbdkit did not start"
            time.sleep(0.02)
        before = _rss()
        stream = DiskStream("disk0", NbdEndpoint(f"nbd+unix:///?socket={sock}"), size)
        total = sum(len(chunk) for chunk in stream)
        grew = (_rss() - before) >> 20
    finally:
        proc.terminate()
        proc.wait()
    assert total == size and stream.bytes_read == size
    assert grew < 64, f"RSS stayed {grew} MiB up after streaming a {size >> 20} MiB disk"
