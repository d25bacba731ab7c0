"""The tunnel supervisor: keeps the SSH connection(s) up and the forwards usable.

One task per SSH connection ("slot") connects, serves until the connection
is lost, then waits out an exponential backoff and tries again; the local
listeners are bound once and survive every reconnect. Connection 0 also
carries the reverse forward to the node API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncssh

from sendense_tools import daemon, systemd
from sendense_tools.config import port_list
from sendense_tools.tunnel.backoff import Backoff
from sendense_tools.tunnel.config import TunnelConfig
from sendense_tools.tunnel.events import log_event
from sendense_tools.tunnel.forwarder import LocalForwards, Target
from sendense_tools.tunnel.ssh import HostKeyMismatch, connect, describe_error
from sendense_tools.tunnel.status import TunnelStatus, write_status

# Bounds the goodbye to the hub on shutdown so SIGTERM always ends within 5 s.
CLOSE_TIMEOUT = 2.0
# SSH connections being opened at once: the hub's sshd drops a source's unauthenticated
# connections past PerSourceMaxStartups (4 by default), so several connections never
# start together into a refusal and a backoff; 2 leaves room for `sendense tunnel check`.
CONNECTING_AT_ONCE = 2


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _Slot:
    index: int
    conn: asyncssh.SSHClientConnection | None = None
    ever_up: bool = False


class Supervisor(daemon.Service):
    def __init__(self, cfg: TunnelConfig) -> None:
        self.cfg = cfg
        fw = cfg.forwards
        self.targets = forward_targets(cfg)
        self.ports = list(self.targets)
        self.slots = [_Slot(i) for i in range(cfg.tuning.connections)]
        self.forwards = LocalForwards(
            fw.bind,
            self.targets,
            self.acquire,
            window=cfg.tuning.window,
            max_pktsize=cfg.tuning.max_pktsize,
        )
        self.status = TunnelStatus(
            hub=f"{cfg.hub.host}:{cfg.hub.port}",
            pid=os.getpid(),
            connections=len(self.slots),
            forwards_total=len(self.ports) + 1,
            nbd_listen=fw.nbd_listen,
            nbd_targets=f"{cfg.slot_target(fw.nbd_ports[0])} .. {cfg.slot_target(fw.nbd_ports[1])}",
        )
        self._any_up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._round_robin = itertools.count()
        self._connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)
        self._tasks: list[asyncio.Task] = []

    # -- used by the forwarder -------------------------------------------------

    async def acquire(self) -> asyncssh.SSHClientConnection | None:
        """A live connection (round robin, so the channels of one disk spread over
        every SSH connection), waiting up to outage_wait for one to come back."""
        deadline = time.monotonic() + self.cfg.forwards.outage_wait
        while not self._stopping.is_set():
            live = [s.conn for s in self.slots if s.conn is not None]
            if live:
                return live[next(self._round_robin) % len(live)]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._any_up.wait(), remaining)
        return None

    # -- life cycle --------------------------------------------------------------

    async def start(self) -> str:
        """Bind the listeners and connect; done once the first connection is up."""
        fw = self.cfg.forwards
        await self.forwards.start()
        log_event(
            "listening",
            bind=fw.bind,
            nbd_ports=f"{fw.nbd_ports[0]}-{fw.nbd_ports[1]}",
            nbd_targets=self.status.nbd_targets,
            api_port=fw.api_port,
            forwards=self.forwards.bound,
        )
        self._publish()
        self._tasks = [asyncio.create_task(self._slot_loop(slot)) for slot in self.slots]
        # READY only once connected: the node's units order themselves after us.
        connected = asyncio.ensure_future(self._any_up.wait())
        try:
            await asyncio.wait([connected, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        self._raise_crashed()
        return self._status_line()

    async def finished(self) -> None:
        # A connection loop only returns on stop; one that raised is a bug,
        # and exiting non-zero lets systemd restart us.
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        self._raise_crashed()

    def _raise_crashed(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log_event("crashed", "error", error=repr(task.exception()))
                raise task.exception()

    async def stop(self) -> None:
        log_event("stopping", reason="signal")
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.forwards.stop()
        self.status.backoff_seconds = None
        self.status.next_attempt_at = None
        self._publish()
        log_event("stopped")

    async def _slot_loop(self, slot: _Slot) -> None:
        backoff = Backoff(self.cfg.backoff.initial, self.cfg.backoff.max)
        hub = self.status.hub
        while not self._stopping.is_set():
            log_event("connecting", hub=hub, connection=slot.index)
            try:
                async with self._connecting:
                    conn, client = await connect(self.cfg)
            except HostKeyMismatch as exc:
                error = str(exc)
                log_event("host_key_rejected", "error", hub=hub, error=error)
            except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
                error = describe_error(exc)
                log_event("connect_failed", "warning", hub=hub, connection=slot.index, error=error)
            else:
                started = time.monotonic()
                await self._serve(slot, conn)
                if self._stopping.is_set():
                    return
                if time.monotonic() - started >= self.cfg.backoff.reset_after:
                    backoff.reset()
                reason = client.lost_reason
                error = describe_error(reason) if reason else "connection closed by the hub"
                log_event("connection_lost", "warning", hub=hub, connection=slot.index, error=error)
            self.status.failed_attempts += 1
            self.status.last_error = error
            self.status.last_error_at = _now()
            delay = backoff.next_delay()
            self.status.backoff_seconds = round(delay, 2)
            self.status.next_attempt_at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(
                timespec="seconds"
            )
            self._publish()
            log_event("retry_scheduled", connection=slot.index, delay=f"{delay:.2f}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _serve(self, slot: _Slot, conn: asyncssh.SSHClientConnection) -> None:
        slot.conn = conn
        if slot.ever_up:
            self.status.reconnects += 1
        slot.ever_up = True
        self.status.failed_attempts = 0
        self.status.backoff_seconds = None
        self.status.next_attempt_at = None
        self._any_up.set()
        log_event("connected", hub=self.status.hub, connection=slot.index)
        reverse = asyncio.create_task(self._reverse_loop(conn)) if slot.index == 0 else None
        self._publish()
        closed = asyncio.ensure_future(conn.wait_closed())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            slot.conn = None
            if not any(s.conn for s in self.slots):
                self._any_up.clear()
            if reverse is not None:
                reverse.cancel()
                await asyncio.gather(reverse, return_exceptions=True)
                self.status.reverse_up = False
            conn.close()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(closed, CLOSE_TIMEOUT)
            self._publish()

    async def _reverse_loop(self, conn: asyncssh.SSHClientConnection) -> None:
        fw = self.cfg.forwards
        target_host, target_port = fw.reverse_target
        backoff = Backoff(self.cfg.backoff.initial, self.cfg.backoff.max)
        while True:
            try:
                # "127.0.0.1" literally: the hub's permitlisten compares the bind
                # host as a string, and an empty host would be sent as "localhost".
                listener = await conn.forward_remote_port(
                    "127.0.0.1", fw.reverse_port, target_host, target_port
                )
            except asyncssh.ChannelListenError as exc:
                # Often the hub still holds the port for our previous, dead session.
                error = f"hub refused reverse forward 127.0.0.1:{fw.reverse_port}: {exc}"
                self.status.last_error = error
                self.status.last_error_at = _now()
                self._publish()
                log_event("reverse_refused", "error", error=error)
                await asyncio.sleep(backoff.next_delay())
                continue
            except (asyncssh.Error, OSError):
                return  # the connection itself went away; the slot loop handles it
            self.status.reverse_up = True
            self._publish()
            log_event(
                "reverse_up",
                listen=f"127.0.0.1:{fw.reverse_port}",
                target=f"{target_host}:{target_port}",
            )
            await listener.wait_closed()
            self.status.reverse_up = False
            return

    def _publish(self) -> None:
        st = self.status
        up = sum(1 for s in self.slots if s.conn is not None)
        was_connected = st.connected
        st.connections_up = up
        st.connected = up == len(self.slots)
        if st.connected and not was_connected:
            st.since = _now()
        elif not st.connected:
            st.since = None
        st.forwards_up = (len(self.ports) if up else 0) + (1 if st.reverse_up else 0)
        st.updated_at = _now()
        write_status(self.cfg.status.file, st)
        systemd.notify(f"STATUS={self._status_line()}")

    def _status_line(self) -> str:
        st = self.status
        state = "connected" if st.connected else f"disconnected ({st.last_error})"
        return f"{state}; {st.forwards_up}/{st.forwards_total} forwards up"


def forward_targets(cfg: TunnelConfig) -> dict[int, Target]:
    """Every local port and its hub end: the NBD slots (this node's sockets, or the
    hub's ports in the old layout), then the API port."""
    fw = cfg.forwards
    unix = fw.nbd_listen == "unix"
    targets = {
        slot: Target(path=cfg.slot_target(slot)) if unix else Target(port=slot)
        for slot in port_list(fw.nbd_ports)
    }
    targets[fw.api_port] = Target(port=fw.api_port)
    return targets


def run_tunnel(cfg: TunnelConfig) -> None:
    asyncio.run(daemon.run(Supervisor(cfg), "tunnel"))
