"""The NBD port pool: all-or-nothing allocation of N ports for one job.

Every method is synchronous and never awaits, so on the event loop a call is
atomic: two concurrent requests can never be handed the same port.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


class PoolExhausted(Exception):
    def __init__(self, needed: int, free: int) -> None:
        super().__init__(f"{needed} NBD ports needed, {free} free")
        self.needed = needed
        self.free = free


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


class PortAllocator:
    def __init__(self, port_range: tuple[int, int], bind: str = "127.0.0.1") -> None:
        self.ports = list(range(port_range[0], port_range[1] + 1))
        self._pool = frozenset(self.ports)
        self.bind = bind
        self._owner: dict[int, str] = {}

    def allocate(self, job_id: str, count: int) -> list[int]:
        """`count` ports for `job_id`, lowest first; PoolExhausted allocates nothing.

        A port that something else holds (not bindable) is skipped, not handed out.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        free = [p for p in self.ports if p not in self._owner]
        if len(free) < count:
            raise PoolExhausted(count, len(free))
        chosen: list[int] = []
        for port in free:
            if port_is_bindable(self.bind, port):
                chosen.append(port)
                if len(chosen) == count:
                    break
        if len(chosen) < count:
            raise PoolExhausted(count, len(chosen))
        for port in chosen:
            self._owner[port] = job_id
        return chosen

    def claim(self, job_id: str, port: int) -> None:
        """Record a port as held (state restored from the database)."""
        self._owner[port] = job_id

    def release_job(self, job_id: str) -> list[int]:
        ports = [p for p, j in self._owner.items() if j == job_id]
        for port in ports:
            del self._owner[port]
        return sorted(ports)

    def release_port(self, port: int) -> str | None:
        return self._owner.pop(port, None)

    def owner(self, port: int) -> str | None:
        return self._owner.get(port)

    def allocations(self) -> dict[int, str]:
        return dict(sorted(self._owner.items()))

    def metrics(self) -> PoolMetrics:
        total = len(self.ports)
        allocated = sum(1 for p in self._owner if p in self._pool)
        return PoolMetrics(total=total, allocated=allocated, available=total - allocated)
