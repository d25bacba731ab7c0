"""NBD slots: all-or-nothing allocation of N slots of one node's pool for one job.

Each node has its own pool (slot 10100 of node A and slot 10100 of node B are
different unix sockets), so one site's 101-disk VM never answers 503 to another
site; a hub-wide cap on concurrent exports bounds the hub's own load instead.
In the old "tcp" layout the slots are TCP ports, so every node shares one pool.

Every method is synchronous and never awaits, so on the event loop a call is
atomic: two concurrent requests can never be handed the same slot.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

# The pool key of the shared pool of the "tcp" layout.
SHARED = ""


class PoolExhausted(Exception):
    def __init__(self, node: str, needed: int, free: int) -> None:
        whose = f"node {node}'s" if node else "the hub's"
        super().__init__(f"not enough NBD slots in {whose} pool: {needed} needed, {free} free")
        self.node = node
        self.needed = needed
        self.free = free


class ExportCapReached(Exception):
    def __init__(self, needed: int, running: int, cap: int) -> None:
        super().__init__(
            f"{needed} NBD exports needed, {running} of at most {cap} already run on this hub"
        )
        self.needed = needed
        self.running = running
        self.cap = cap


@dataclass(frozen=True)
class PoolMetrics:
    total: int
    allocated: int
    available: int

    @property
    def utilization(self) -> float:
        return self.allocated / self.total if self.total else 0.0


def port_is_bindable(host: str, port: int) -> bool:
    # qemu-nbd listens with SO_REUSEADDR, so a port in TIME_WAIT is usable by it.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class SlotAllocator:
    """Slots per node (unix layout) or one shared pool of TCP ports (`tcp_bind` set)."""

    def __init__(
        self, port_range: tuple[int, int], max_exports: int, tcp_bind: str | None = None
    ) -> None:
        self.slots = list(range(port_range[0], port_range[1] + 1))
        self._pool = frozenset(self.slots)
        self.max_exports = max_exports
        self.tcp_bind = tcp_bind
        self._owner: dict[tuple[str, int], str] = {}

    def _key(self, node: str) -> str:
        return SHARED if self.tcp_bind is not None else node

    def _usable(self, slot: int) -> bool:
        # A TCP port that something else holds is skipped; a node's socket path is ours alone.
        return self.tcp_bind is None or port_is_bindable(self.tcp_bind, slot)

    def allocate(self, job_id: str, node: str, count: int) -> list[int]:
        """`count` slots of `node` for `job_id`, lowest first; an error allocates nothing."""
        if count < 1:
            raise ValueError("count must be at least 1")
        running = len(self._owner)
        if running + count > self.max_exports:
            raise ExportCapReached(count, running, self.max_exports)
        key = self._key(node)
        free = [s for s in self.slots if (key, s) not in self._owner]
        if len(free) < count:
            raise PoolExhausted(key, count, len(free))
        chosen = [s for s in free if self._usable(s)][:count]
        if len(chosen) < count:
            raise PoolExhausted(key, count, len(chosen))
        for slot in chosen:
            self._owner[(key, slot)] = job_id
        return chosen

    def claim(self, job_id: str, node: str, slot: int) -> None:
        """Record a slot as held (state restored from the database)."""
        self._owner[(self._key(node), slot)] = job_id

    def release_job(self, job_id: str) -> list[int]:
        held = [k for k, j in self._owner.items() if j == job_id]
        for key in held:
            del self._owner[key]
        return sorted(slot for _, slot in held)

    def owner(self, node: str, slot: int) -> str | None:
        return self._owner.get((self._key(node), slot))

    def running(self) -> int:
        return len(self._owner)

    def metrics(self, node: str) -> PoolMetrics:
        """One node's pool (in the tcp layout, the shared pool whatever the node)."""
        key = self._key(node)
        total = len(self.slots)
        allocated = sum(1 for k, s in self._owner if k == key and s in self._pool)
        return PoolMetrics(total=total, allocated=allocated, available=total - allocated)

    def hub_metrics(self, nodes: list[str]) -> PoolMetrics:
        """Every pool of the hub together (the tcp layout has one)."""
        pools = [self.metrics(n) for n in ([SHARED] if self.tcp_bind is not None else nodes)]
        return PoolMetrics(
            total=sum(p.total for p in pools),
            allocated=sum(p.allocated for p in pools),
            available=sum(p.available for p in pools),
        )
