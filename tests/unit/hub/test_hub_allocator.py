"""Slot pools: per node, all-or-nothing, capped hub-wide; the old layout's shared TCP pool."""

from __future__ import annotations

import socket

import pytest

from sendense_tools.hub.allocator import ExportCapReached, PoolExhausted, SlotAllocator
from tests.fixtures.ports import free_port_range


def test_each_node_has_its_own_slots_all_or_nothing():
    pool = SlotAllocator((10100, 10104), max_exports=100)
    a = pool.allocate("job-a", "a", 3)
    # Node b gets the same slot numbers: they are its own sockets.
    b = pool.allocate("job-b", "b", 5)
    assert a == [10100, 10101, 10102] and b == [10100, 10101, 10102, 10103, 10104]
    with pytest.raises(PoolExhausted) as exc:
        pool.allocate("job-a2", "a", 3)
    assert (exc.value.node, exc.value.needed, exc.value.free) == ("a", 3, 2)
    assert "node a's pool" in str(exc.value)
    assert pool.metrics("a").allocated == 3
    m = pool.metrics("b")
    assert (m.total, m.allocated, m.available, m.utilization) == (5, 5, 0, 1.0)
    hub = pool.hub_metrics(["a", "b", "c"])
    assert (hub.total, hub.allocated, hub.available) == (15, 8, 7)
    assert pool.owner("b", 10100) == "job-b" and pool.owner("a", 10100) == "job-a"
    assert pool.release_job("job-a") == a
    assert pool.owner("a", 10100) is None and pool.owner("b", 10100) == "job-b"
    assert pool.allocate("job-a3", "a", 5) == b


def test_the_hub_wide_cap_names_how_many_run_and_allocates_nothing():
    pool = SlotAllocator((10100, 10200), max_exports=4)
    pool.allocate("job-a", "a", 3)
    with pytest.raises(ExportCapReached) as exc:
        pool.allocate("job-b", "b", 2)
    assert (exc.value.needed, exc.value.running, exc.value.cap) == (2, 3, 4)
    assert "3 of at most 4" in str(exc.value)
    assert pool.running() == 3 and pool.metrics("b").allocated == 0
    assert pool.allocate("job-b", "b", 1) == [10100]


def test_tcp_layout_shares_one_pool_and_skips_a_port_bound_elsewhere():
    lo, hi = free_port_range(3)
    pool = SlotAllocator((lo, hi), max_exports=100, tcp_bind="127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", lo + 1))
        taken.listen()
        assert pool.allocate("job", "a", 1) == [lo]
        # Another node cannot get the same port: one TCP port, one export.
        assert pool.allocate("job2", "b", 1) == [lo + 2]
        with pytest.raises(PoolExhausted) as exc:
            pool.allocate("job3", "c", 1)
        assert exc.value.free == 0
    assert pool.metrics("a") == pool.metrics("b")
    assert pool.hub_metrics(["a", "b", "c"]).total == 3
