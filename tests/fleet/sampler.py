"""The hub container's memory and CPU while the fleet backs up, from its cgroup (v1).

Reading the cgroup files costs next to nothing, unlike a `podman stats` per
sample on a machine whose two cores the fleet already fills. Memory is the
cgroup's resident set (memory.stat total_rss: every process of the container,
qemu-nbd included), apart from the page cache its repository writes fill.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

INTERVAL = 0.5


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    rss: int  # bytes
    cache: int  # bytes
    cpu_ns: int  # cumulative CPU time of the cgroup


@dataclass
class Usage:
    """What the samples add up to (CPU in cores: 1.0 is one core busy all the time)."""

    samples: int
    peak_rss: int
    idle_rss: int
    peak_cache: int
    peak_cpu: float
    mean_cpu: float


def parse_memory_stat(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def read_sample(memory: Path, cpuacct: Path) -> Sample:
    stat = parse_memory_stat((memory / "memory.stat").read_text())
    return Sample(
        at=time.monotonic(),
        rss=stat.get("total_rss", stat.get("rss", 0)),
        cache=stat.get("total_cache", stat.get("cache", 0)),
        cpu_ns=int((cpuacct / "cpuacct.usage").read_text()),
    )


def summarise(samples: list[Sample], idle_rss: int) -> Usage:
    """Peak and mean over the samples; CPU of each interval between two samples."""
    if len(samples) < 2:
        raise ValueError("need two samples at least for a CPU figure")
    rates = [
        (b.cpu_ns - a.cpu_ns) / 1e9 / (b.at - a.at)
        for a, b in itertools.pairwise(samples)
        if b.at > a.at
    ]
    first, last = samples[0], samples[-1]
    return Usage(
        samples=len(samples),
        peak_rss=max(s.rss for s in samples),
        idle_rss=idle_rss,
        peak_cache=max(s.cache for s in samples),
        peak_cpu=max(rates),
        mean_cpu=(last.cpu_ns - first.cpu_ns) / 1e9 / (last.at - first.at),
    )


@dataclass
class Sampler:
    """Samples a cgroup in a thread between start() and stop()."""

    memory: Path
    cpuacct: Path
    interval: float = INTERVAL
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.samples.append(read_sample(self.memory, self.cpuacct))
        self._thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(read_sample(self.memory, self.cpuacct))

    def stop(self, idle_rss: int) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(read_sample(self.memory, self.cpuacct))
        return summarise(self.samples, idle_rss)
