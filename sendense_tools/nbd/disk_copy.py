"""The synchronous copy of one disk: its attempts (reconnecting with backoff after a dropped
connection, resuming from the last flushed position), its workers, and what it hashes."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import nbd

from sendense_tools.nbd.blkhash import StreamDigests
from sendense_tools.nbd.buffers import SLOT_SIZE, Lease, MemoryBudget
from sendense_tools.nbd.connect import NbdFailure, PskFile, Stopped, close_handle, open_handle
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.nbd.hasher import ChangesSink, OrderedHasher, Sha256Sink, Sink
from sendense_tools.nbd.planner import Planner
from sendense_tools.nbd.results import CopyError, CopyResult
from sendense_tools.nbd.retry import Reconnects
from sendense_tools.nbd.worker import Worker

REQUEST_SIZE = SLOT_SIZE  # nbdcopy's default; much larger requests measured slower
REQUESTS_PER_WORKER = 32
HASH_BACKLOG = 64 << 20  # data read ahead of the hasher (it lags behind long zero ranges)
CHECKPOINT_BYTES = 512 << 20  # flush this often: the most a restarted target makes us redo


class DiskCopy:
    """Runs on its own thread, driven by copy_disk()."""

    def __init__(
        self,
        disk_id: str,
        source: NbdEndpoint,
        target: NbdEndpoint,
        *,
        connections: int,
        target_is_zero: bool,
        retry_for: float,
        areas: list[tuple[int, int]] | None,
        sha256: bool,
        budget: MemoryBudget,
    ) -> None:
        self.disk_id = disk_id
        self.areas = areas
        self.want_sha256 = sha256
        self.source = source
        self.target = target
        self.connections = connections
        self.target_is_zero = target_is_zero
        self.retry_for = retry_for
        self.budget = budget
        self.requests = REQUESTS_PER_WORKER
        self.cancelled = threading.Event()
        self.stop = threading.Event()
        self.exits: queue.Queue[Worker] = queue.Queue()
        self.planner: Planner | None = None
        self.hasher: OrderedHasher | None = None
        self._sums: _Sums | None = None
        self.pool: Lease | None = None
        self.src_psk: str | None = None
        self.dst_psk: str | None = None
        self.retries = 0
        self._layout: tuple[int, int, bool] = (1, 1, True)  # workers, target conns, multi-conn

    def cancel(self) -> None:
        self.cancelled.set()
        self.stop.set()

    def run(self) -> CopyResult:
        started = time.monotonic()
        psks = [PskFile(ep.tls) if ep.tls else None for ep in (self.source, self.target)]
        self.src_psk, self.dst_psk = (p.path if p else None for p in psks)
        try:
            self._run_attempts()
            self.hasher.finish()
            self._give_back()
            sums = self._sums
            counters = self.planner.snapshot()
            return CopyResult(
                disk_id=self.disk_id,
                capacity=self.planner.size,
                bytes_copied=counters.data,
                bytes_zero=counters.zero,
                sha256=sums.sha256.hexdigest() if sums.sha256 else None,
                seconds=time.monotonic() - started,
                retries=self.retries,
                checksum=sums.blocks.checksum() if sums.blocks else None,
                changes=sums.changes_summary(self.areas),
            )
        finally:
            if self.hasher is not None:
                self.hasher.close()
            self._give_back()
            self.budget.trim_if_idle()
            for p in psks:
                if p is not None:
                    p.remove()

    def _give_back(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _run_attempts(self) -> None:
        reconnects = Reconnects(self.retry_for, self.cancelled)
        while True:
            if self.cancelled.is_set():
                raise Stopped()
            self.stop = threading.Event()
            done_before = self.planner.counters.done if self.planner else 0
            try:
                self._attempt()
                return
            except NbdFailure as f:
                if self.cancelled.is_set():
                    raise Stopped() from None
                gone = self.source.server_gone() if self.source.server_gone else None
                if f.transient and gone is not None:
                    # Reconnecting cannot bring back a source whose server exited.
                    raise CopyError(f"{self.disk_id}: {gone}") from None
                if self.planner is not None and self.planner.counters.done > done_before:
                    reconnects.progressed()
                why = reconnects.wait(f)
                self.retries = reconnects.retries
                if why is not None:
                    raise CopyError(f"{self.disk_id}: {why}") from None

    def _attempt(self) -> None:
        src0 = open_handle(self.source, self.stop, psk_file=self.src_psk, allocation=True)
        try:
            dst0 = open_handle(self.target, self.stop, psk_file=self.dst_psk)
        except BaseException:
            close_handle(src0)
            raise
        try:
            self._prepare(src0, dst0)
        except BaseException:
            close_handle(src0)
            close_handle(dst0)
            raise
        workers_n = self._layout[0]
        # Today's full pool is what one disk alone gets; with others running, its share.
        self.pool = self.budget.lease(workers_n * self.requests + HASH_BACKLOG // REQUEST_SIZE)
        try:
            self._run_workers(src0, dst0)
        except BaseException:
            self._abandon()
            raise

    def _run_workers(self, src0: nbd.NBD, dst0: nbd.NBD) -> None:
        workers_n, targets_n, _ = self._layout
        workers = [
            Worker(self, [k for k in range(targets_n) if k % workers_n == w])
            for w in range(workers_n)
        ]
        workers[0].src, workers[0].dsts = src0, {0: dst0}
        for w in workers:
            w.thread.start()
        first_error: BaseException | None = None
        for _ in workers:
            w = self.exits.get()
            w.thread.join()
            if w.error is not None and (first_error is None or isinstance(first_error, Stopped)):
                first_error = w.error
                self.stop.set()
        if first_error is not None:
            raise first_error

    def _abandon(self) -> None:
        """After a failed attempt: everything read before `durable` is hashed (the next
        attempt resumes there and the hasher skips what it has), what was read after it is
        dropped, and the buffers go back to the budget now, not after the reconnect's wait."""
        self.hasher.wait_for(self.planner.durable, self.cancelled)
        self.hasher.reset_pending()
        self._give_back()

    def _prepare(self, src: nbd.NBD, dst: nbd.NBD) -> None:
        size, target_size = src.get_size(), dst.get_size()
        if target_size < size:
            raise NbdFailure(
                f"target {self.target.uri} holds {target_size} bytes, the disk has {size}", False
            )
        if self.planner is None:
            workers_n = self.connections if src.can_multi_conn() else 1
            # A target that does not advertise multi-conn (qemu-nbd --shared=1) may never
            # answer a second connection: that was the seed's hang.
            targets_n = self.connections if dst.can_multi_conn() else 1
            workers_n = min(workers_n, targets_n)
            multi = dst.can_multi_conn()
            self._layout = (workers_n, targets_n, multi)
            self._check_areas(size)
            self._sums = _Sums.for_copy(size, self.areas, self.want_sha256)
            self.hasher = OrderedHasher(size, self._sums.sinks(), self.areas)
            self.planner = Planner(
                size,
                self.hasher,
                request_size=REQUEST_SIZE,
                target_is_zero=self.target_is_zero,
                use_extents=src.can_meta_context("base:allocation"),
                flush_keys={0} if multi else set(range(targets_n)),
                checkpoint_bytes=CHECKPOINT_BYTES,
                areas=self.areas,
            )
            return
        if size != self.planner.size:
            raise NbdFailure(f"source {self.source.uri} changed size to {size}", False)
        self.planner.restart()

    def _check_areas(self, size: int) -> None:
        if self.areas and self.areas[-1][0] + self.areas[-1][1] > size:
            offset, length = self.areas[-1]
            raise NbdFailure(f"area ({offset}, {length}) ends past the disk's {size} bytes", False)


@dataclass
class _Sums:
    """What one copy hashes: a full, SHA-256 and the block digests; an areas copy, the
    changes digest, and the block digests too when its one area is the whole disk."""

    sha256: Sha256Sink | None
    blocks: StreamDigests | None
    changes: ChangesSink | None

    @classmethod
    def for_copy(cls, size: int, areas: list[tuple[int, int]] | None, sha256: bool) -> _Sums:
        if areas is None:
            return cls(Sha256Sink() if sha256 else None, StreamDigests(size), None)
        whole = areas == [(0, size)]
        return cls(None, StreamDigests(size) if whole else None, ChangesSink())

    def sinks(self) -> list[Sink]:
        return [s for s in (self.sha256, self.blocks, self.changes) if s is not None]

    def changes_summary(self, areas: list[tuple[int, int]] | None) -> dict | None:
        if self.changes is None or areas is None:
            return None
        return {
            "algorithm": "blake2b",
            "areas": len(areas),
            "bytes": sum(length for _, length in areas),
            "digest": self.changes.hexdigest(),
        }
