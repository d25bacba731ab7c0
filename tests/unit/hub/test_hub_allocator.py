"""The port pool: all-or-nothing, never a port twice, never a port someone else holds."""

from __future__ import annotations

import socket

import pytest

from sendense_tools.hub.allocator import PoolExhausted, PortAllocator
from tests.fixtures.ports import free_port_range


def test_allocation_is_all_or_nothing_and_released_by_job_and_port():
    lo, hi = free_port_range(5)
    pool = PortAllocator((lo, hi))
    a = pool.allocate("job-a", 3)
    assert a == [lo, lo + 1, lo + 2]
    with pytest.raises(PoolExhausted) as exc:
        pool.allocate("job-b", 3)
    assert (exc.value.needed, exc.value.free) == (3, 2)
    assert pool.metrics().allocated == 3
    b = pool.allocate("job-b", 2)
    assert set(a).isdisjoint(b)
    m = pool.metrics()
    assert (m.total, m.allocated, m.available, m.utilization) == (5, 5, 0, 1.0)
    assert pool.release_port(b[0]) == "job-b"
    assert pool.release_job("job-a") == a
    assert pool.allocations() == {b[1]: "job-b"}
    assert pool.metrics().available == 4


def test_a_port_bound_by_another_process_is_skipped():
    lo, hi = free_port_range(3)
    pool = PortAllocator((lo, hi))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", lo + 1))
        taken.listen()
        assert pool.allocate("job", 2) == [lo, lo + 2]
        pool.release_job("job")
        with pytest.raises(PoolExhausted) as exc:
            pool.allocate("job", 3)
        assert exc.value.free == 2
    assert pool.allocations() == {}
