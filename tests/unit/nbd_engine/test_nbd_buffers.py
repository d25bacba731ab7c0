"""The copy buffers' memory budget: fair shares, the guaranteed minimum, shrinking and growing
as copies come and go, never over budget (real leases and buffers, real threads)."""

from __future__ import annotations

import random
import threading

import pytest

from sendense_tools.nbd.buffers import (
    MIN_BUDGET,
    MIN_SLOTS,
    NODE_DISKS,
    SLOT_SIZE,
    MemoryBudget,
    fair_shares,
)
from sendense_tools.nbd.disk_copy import HASH_BACKLOG, REQUEST_SIZE, REQUESTS_PER_WORKER
from sendense_tools.nbd.planner import Chunk

# What one disk copied with 2 connections wants: the pool it had before there was a budget.
FULL_POOL = 2 * REQUESTS_PER_WORKER + HASH_BACKLOG // REQUEST_SIZE


def take(lease, most: int = 10_000) -> list[memoryview]:
    """Every slot the lease grants now."""
    got = []
    while len(got) < most and (slot := lease.get()) is not None:
        got.append(slot)
    return got


def test_max_min_fair_shares():
    assert fair_shares(100, [320], [4]) == [100]
    assert fair_shares(1000, [320], [4]) == [320]
    assert fair_shares(100, [320, 320, 320, 320], [4] * 4) == [25] * 4
    # What a small copy does not want goes to the others.
    assert fair_shares(100, [10, 320, 320], [4] * 3) == [10, 45, 45]
    assert fair_shares(8, [320, 320, 320], [4] * 3) == [4, 4, 4]  # floors first
    assert fair_shares(100, [], []) == []


def test_a_disk_alone_gets_the_pool_it_had_before_the_budget():
    budget = MemoryBudget(1 << 30)
    lease = budget.lease(FULL_POOL)
    slots = take(lease)
    assert len(slots) == FULL_POOL
    assert all(len(s) == SLOT_SIZE for s in slots)
    assert budget.used_bytes == FULL_POOL * SLOT_SIZE == 80 << 20


def test_buffers_are_mapped_on_demand_not_up_front():
    budget = MemoryBudget(1 << 30)
    lease = budget.lease(FULL_POOL)
    assert budget.used_bytes == 0
    first = lease.get()
    assert budget.used_bytes == SLOT_SIZE
    lease.put(first)
    assert lease.get() is first  # recycled, not mapped again
    assert budget.used_bytes == SLOT_SIZE


def test_a_share_shrinks_as_others_start_and_grows_back_as_they_end():
    budget = MemoryBudget(100 * SLOT_SIZE)
    a = budget.lease(FULL_POOL)
    held_a = take(a)
    assert len(held_a) == 100
    b = budget.lease(FULL_POOL)
    assert budget.shares() == [50, 50]
    assert b.get() is None  # the budget is full until `a` gives back what it is over
    for slot in held_a[:60]:
        a.put(slot)
    held_a = held_a[60:]
    # 50 of its slots unmapped, 10 kept idle: 40 in use, 50 held, its new share.
    assert (a.held, len(a.free)) == (50, 10)
    held_b = take(b)
    assert len(held_b) == 50
    assert budget.used_bytes == 100 * SLOT_SIZE
    assert len(take(a)) == 10  # its idle ones, and not one past its share
    b.close()
    assert budget.shares() == [100]
    assert len(take(a)) == 50
    assert budget.used_bytes == 100 * SLOT_SIZE


def test_idle_slots_of_a_copy_over_its_share_are_unmapped_at_once():
    budget = MemoryBudget(100 * SLOT_SIZE)
    a = budget.lease(FULL_POOL)
    for slot in take(a):
        a.put(slot)
    assert budget.used_bytes == 100 * SLOT_SIZE
    b = budget.lease(FULL_POOL)
    assert budget.used_bytes == 50 * SLOT_SIZE
    assert len(take(b)) == 50


def test_at_the_minimum_budget_every_one_of_101_disks_gets_its_minimum_at_once():
    budget = MemoryBudget(MIN_BUDGET)
    leases = [budget.lease(FULL_POOL) for _ in range(NODE_DISKS)]
    assert min(budget.shares()) >= MIN_SLOTS
    # Each takes its minimum first, as copies starting together would ...
    held = [take(lease, MIN_SLOTS) for lease in leases]
    assert all(len(h) == MIN_SLOTS for h in held)
    # ... and whatever anyone grabs after, nobody is past its share or the budget.
    for lease, h in zip(leases, held, strict=True):
        h += take(lease)
    assert budget.used_bytes <= budget.total
    assert budget.peak_bytes <= MIN_BUDGET
    assert all(lease.held <= lease.share for lease in leases)


def test_copies_past_what_the_minimums_allow_wait_in_order_and_are_admitted_later():
    budget = MemoryBudget(3 * MIN_SLOTS * SLOT_SIZE)
    leases = [budget.lease(FULL_POOL) for _ in range(5)]
    assert budget.shares() == [MIN_SLOTS] * 3 + [0, 0]
    assert leases[3].get() is None
    held0 = take(leases[0])
    leases[0].close()
    assert budget.shares() == [MIN_SLOTS] * 3 + [0]
    assert len(take(leases[3])) == MIN_SLOTS
    assert leases[4].get() is None
    assert len(held0) == MIN_SLOTS and budget.used_bytes == MIN_SLOTS * SLOT_SIZE


def test_closing_gives_everything_back_even_slots_still_out():
    budget = MemoryBudget(1 << 30)
    lease = budget.lease(FULL_POOL)
    out = take(lease)
    lease.close()
    assert budget.used_bytes == 0
    lease.put(out[0])  # a late holder (the hasher, a write) finishing after the copy ended
    assert budget.used_bytes == 0
    assert lease.get() is None
    assert budget.peak_bytes == FULL_POOL * SLOT_SIZE


def test_a_chunk_slot_goes_back_when_its_last_holder_releases_it():
    budget = MemoryBudget(MIN_SLOTS * SLOT_SIZE)
    lease = budget.lease(MIN_SLOTS)
    chunk = Chunk(0, 4096, zero=False, refs=2)
    chunk.slot = lease.get()
    chunk.buf = chunk.slot[:4096]
    take(lease)
    lease.release(chunk)  # hashed; the write is still in flight
    assert chunk.slot is not None and lease.get() is None
    lease.release(chunk)  # written
    assert chunk.slot is None and chunk.buf is None
    assert lease.get() is not None


def test_budget_below_one_copys_minimum_is_refused():
    with pytest.raises(ValueError, match="below one copy's 4 buffers"):
        MemoryBudget(MIN_SLOTS * SLOT_SIZE - 1)


def test_shrinking_the_budget_of_running_copies():
    budget = MemoryBudget(1 << 30)
    lease = budget.lease(FULL_POOL)
    held = take(lease)
    budget.resize(16 << 20)
    for slot in held:
        lease.put(slot)
    assert budget.used_bytes == 16 << 20
    assert len(take(lease)) == (16 << 20) // SLOT_SIZE  # its idle slots, no more


def test_many_threads_never_push_the_budget_over_its_total():
    """Copies start, churn their buffers and end on their own threads, as disks do."""
    budget = MemoryBudget(64 * SLOT_SIZE)
    errors: list[BaseException] = []
    over: list[int] = []

    def copy(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(5):
                lease = budget.lease(rng.choice([8, 40, FULL_POOL]))
                held: list[memoryview] = []
                for _ in range(300):
                    if held and rng.random() < 0.5:
                        lease.put(held.pop(rng.randrange(len(held))))
                    elif (slot := lease.get()) is not None:
                        held.append(slot)
                    if budget.used_bytes > budget.total:
                        over.append(budget.used_bytes)
                lease.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=copy, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert over == []
    assert budget.peak_bytes <= budget.total
    assert budget.peak_bytes > 32 * SLOT_SIZE  # the churn did fill the budget
    assert budget.used_bytes == 0 and budget.shares() == []
