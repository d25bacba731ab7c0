"""The node's memory budget for disk copies: one cap on the request buffers of every disk copy
running in the process, the data waiting for the hasher included.

Each copy takes a `Lease` and asks it for one buffer (a slot) per request. A lease may hold up
to its share: max-min fair, so a copy alone gets all it wants (today's full pool, no loss of
throughput) and N copies split the budget evenly, what one does not want going to the others.
Shares are recomputed whenever a lease opens or closes: a running copy gives slots back as its
requests finish until it is within its new share, and takes more again when others end.

Every admitted lease is guaranteed `MIN_SLOTS` (enough requests in flight to progress); the
budget's minimum fits that for a node's 101 slots at once. Leases past what the minimums
allow wait, in arrival order, with no slot at all: nobody is ever over budget. Buffers are
mapped lazily, one by one, and unmapped when a lease gives them back (anonymous mmap, not the
heap: freed memory goes back to the OS at once instead of lingering in malloc's arenas).
Every view of a slot handed to libnbd is released once its request is done: libnbd 1.14's
Python bindings never drop their reference to an aio buffer, so an unreleased view would keep
its mapping alive for the life of the process (the node's RSS never fell after a backup).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import threading
from collections.abc import Sequence

from sendense_tools.nbd.planner import Chunk

SLOT_SIZE = 256 << 10  # one request's buffer: nbdcopy's default request size
MIN_SLOTS = 4  # per copy: 1 MiB, four requests in flight
NODE_DISKS = 101  # a node's NBD slots (10100-10200): the most disks it copies at once
MIN_BUDGET = 128 << 20  # >= NODE_DISKS * MIN_SLOTS * SLOT_SIZE (101 MiB), rounded up
DEFAULT_BUDGET = 1 << 30  # a 4 GiB appliance: 12 disks at full speed, 101 at 10 MiB each


def fair_shares(capacity: int, wants: Sequence[int], floors: Sequence[int]) -> list[int]:
    """Max-min fair split of `capacity` slots: nobody gets more than it wants, what one does
    not want is split among the others, and nobody gets less than its floor."""
    shares = [0] * len(wants)
    left, count = capacity, len(wants)
    for i in sorted(range(count), key=lambda j: wants[j]):
        level = left // count if count else 0
        shares[i] = max(floors[i], min(wants[i], level))
        left -= shares[i]
        count -= 1
    return shares


class MemoryBudget:
    """Slots of SLOT_SIZE bytes shared by leases; one lock for all (a few thousand
    operations a second at full speed: nothing to contend on)."""

    def __init__(self, total: int, slot_size: int = SLOT_SIZE) -> None:
        self.slot_size = slot_size
        self._lock = threading.Lock()
        self._leases: list[Lease] = []  # in arrival order: the order of admission
        self._used = 0  # slots mapped and held by leases (in use or idle)
        self._peak = 0
        self.capacity = 0
        self.resize(total)

    @property
    def total(self) -> int:
        return self.capacity * self.slot_size

    @property
    def used_bytes(self) -> int:
        return self._used * self.slot_size

    @property
    def peak_bytes(self) -> int:
        """The most bytes of buffers held at once since the budget was made."""
        return self._peak * self.slot_size

    def resize(self, total: int) -> None:
        """Change the cap (the node's [backup] memory_budget); running copies follow."""
        if total < MIN_SLOTS * self.slot_size:
            raise ValueError(f"memory budget {total} is below one copy's {MIN_SLOTS} buffers")
        with self._lock:
            self.capacity = total // self.slot_size
            self._rebalance()

    def lease(self, want: int) -> Lease:
        """A copy's pool of up to `want` slots, its share of the budget."""
        lease = Lease(self, want)
        with self._lock:
            self._leases.append(lease)
            self._rebalance()
        return lease

    def shares(self) -> list[int]:
        """Each open lease's share, in arrival order (0: waiting to be admitted)."""
        with self._lock:
            return [lease.share for lease in self._leases]

    def _rebalance(self) -> None:
        """With the lock held: admit leases while their floors fit, split the rest fairly,
        and unmap idle slots of leases now over their share."""
        admitted: list[Lease] = []
        floors = 0
        for lease in self._leases:
            if floors + lease.floor > self.capacity:
                break  # later leases wait too: first come, first admitted
            floors += lease.floor
            admitted.append(lease)
        shares = fair_shares(self.capacity, [x.want for x in admitted], [x.floor for x in admitted])
        for lease in self._leases:
            lease.share = 0
        for lease, share in zip(admitted, shares, strict=True):
            lease.share = share
        for lease in self._leases:
            while lease.held > lease.share and lease.free:
                lease.free.pop()
                lease.held -= 1
                self._used -= 1

    def _take(self, lease: Lease) -> bool:
        with self._lock:
            if lease.closed or lease.held >= lease.share or self._used >= self.capacity:
                return False
            lease.held += 1
            self._used += 1
            self._peak = max(self._peak, self._used)
            return True

    def _get(self, lease: Lease) -> memoryview | None:
        with self._lock:
            if lease.free and lease.held <= lease.share:
                return lease.free.pop()
        if not self._take(lease):
            return None
        # Outside the lock: mapping is a system call. Pages are only touched by the read.
        return memoryview(mmap.mmap(-1, self.slot_size))

    def _put(self, lease: Lease, slot: memoryview) -> None:
        with self._lock:
            if lease.closed:
                return  # its slots were given back when it closed
            if lease.held > lease.share:
                lease.held -= 1
                self._used -= 1
            else:
                lease.free.append(slot)

    def trim_if_idle(self) -> None:
        """Once no copy runs, hand malloc's free memory back to the OS. The copies' other
        big buffers (4 MiB blocks on their way to the block hash) come from malloc's arenas
        once glibc has raised its sliding mmap threshold, and stay there when freed:
        measured after 16 disks at once, RSS 116 MiB up, 76 MiB after malloc_trim. (A fixed
        threshold gave it all back but cost a copy 25% more CPU in page faults.)"""
        with self._lock:
            if self._leases:
                return
        with contextlib.suppress(OSError, AttributeError):  # not glibc: its malloc decides
            ctypes.CDLL(None).malloc_trim(0)

    def _close(self, lease: Lease) -> None:
        with self._lock:
            if lease.closed:
                return
            lease.closed = True
            self._used -= lease.held
            lease.held = 0
            lease.free.clear()
            self._leases.remove(lease)
            self._rebalance()


class Lease:
    """One copy's buffers: `get` a slot per request, `put` it back or `release` it through
    the chunk that shares it; `close` gives everything back to the budget."""

    def __init__(self, budget: MemoryBudget, want: int) -> None:
        if want < 1:
            raise ValueError(f"a lease wants {want} slots (at least 1)")
        self.budget = budget
        self.want = want
        self.floor = min(MIN_SLOTS, want)
        self.share = 0
        self.held = 0  # slots mapped for this lease: in use or in `free`
        self.free: list[memoryview] = []
        self.closed = False
        self._refs = threading.Lock()

    def get(self) -> memoryview | None:
        """A free slot, or None while this lease holds its share (or the budget is full)."""
        return self.budget._get(self)

    def put(self, slot: memoryview) -> None:
        self.budget._put(self, slot)

    def release(self, chunk: Chunk) -> None:
        """One holder of the chunk's slot (the hasher, the writes) is done with it; the last
        one gives it back."""
        with self._refs:
            chunk.refs -= 1
            slot = chunk.slot if chunk.refs == 0 else None
            if slot is not None:
                # libnbd 1.14's aio_pread keeps a reference to the view it read into for
                # good (a leak in its Python bindings): released, the view stops pinning
                # the mapping, which is then unmapped once the budget lets go of the slot.
                chunk.buf.release()
                chunk.slot = chunk.buf = chunk.buffer = None
        if slot is not None:
            self.put(slot)

    def close(self) -> None:
        self.budget._close(self)


# The process's budget: every copy_disk without a budget of its own draws on it. The node
# service and `sendense backup run` resize it from [backup] memory_budget at start.
PROCESS_BUDGET = MemoryBudget(DEFAULT_BUDGET)


def configure(total: int) -> MemoryBudget:
    """The process's budget sized from [backup] memory_budget: the node service and
    `sendense backup run` call this once at start."""
    PROCESS_BUDGET.resize(total)
    return PROCESS_BUDGET
