"""Outages, host keys and systemd integration of `sendense tunnel run`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from tests.integration.tunnel.conftest import echo_roundtrip, refused


async def test_hub_outage_recovers_without_restart(sshd, hub_echo, start_tunnel):
    tunnel = await start_tunnel(forwards={"outage_wait": 30})
    await tunnel.wait_up()
    pid = tunnel.status()["pid"]

    sshd.kill()  # the hub vanishes, sessions included
    down = await tunnel.wait_for(
        lambda s: not s["connected"] and s["backoff_seconds"] is not None and s["last_error"],
        "the outage and its backoff in the status",
    )
    assert down["forwards_up"] == 0

    # A client that connects during the outage waits for the tunnel...
    pending = asyncio.create_task(echo_roundtrip(hub_echo[0], b"sent during the outage"))
    await tunnel.wait_for(lambda s: s["failed_attempts"] >= 2, "at least two retries")
    assert not pending.done()
    sshd.start()
    # ...and is served once the hub is back.
    assert await asyncio.wait_for(pending, 60) == b"sent during the outage"

    up = await tunnel.wait_up()
    assert up["reconnects"] >= 1 and up["pid"] == pid and up["reverse_up"]
    for port in hub_echo:
        payload = os.urandom(64 * 1024)
        assert await echo_roundtrip(port, payload) == payload
    log = tunnel.log()
    assert "event=connection_lost" in log and "event=retry_scheduled" in log


async def test_client_during_outage_is_closed_after_the_bounded_wait(sshd, hub_echo, start_tunnel):
    tunnel = await start_tunnel(forwards={"outage_wait": 1})
    await tunnel.wait_up()
    sshd.kill()
    await tunnel.wait_for(lambda s: not s["connected"], "the outage")
    assert await refused(hub_echo[0])  # closed, not hung and not served
    assert "event=forward_refused" in tunnel.log()


async def test_changed_host_key_is_refused_and_never_accepted(sshd, hub_echo, start_tunnel):
    tunnel = await start_tunnel()
    await tunnel.wait_up()
    sshd.rotate_host_key()
    st = await tunnel.wait_for(
        lambda s: s["failed_attempts"] >= 3 and "HOST KEY CHANGED" in (s["last_error"] or ""),
        "host key refusals",
    )
    assert st["connected"] is False and st["reconnects"] == 0
    assert str(sshd.known_hosts) in st["last_error"]
    assert "level=error event=host_key_rejected" in tunnel.log()
    assert "Accepted publickey" not in sshd.log_text().split("Server listening")[-1]
    # Nothing reaches the hub through a key it does not trust.
    assert await refused(hub_echo[0])


async def test_ready_watchdog_and_sigterm(sshd, start_tunnel):
    notify_path = sshd.base / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
        tunnel = await start_tunnel(env=env)
        messages: list[str] = []
        while not ({"READY=1", "WATCHDOG=1"} <= set(messages)):
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 60)
            messages.extend(data.decode().splitlines())
        assert tunnel.status()["connected"] is True  # READY only once connected

        tunnel.proc.send_signal(signal.SIGTERM)
        # The contract for systemd: a clean stop within 5 s.
        assert await asyncio.wait_for(tunnel.proc.wait(), 5) == 0
        final = tunnel.status()
        assert final["connected"] is False and final["forwards_up"] == 0
        assert "event=stopped" in tunnel.log()
        while True:
            try:
                messages.extend(sock.recv(4096).decode().splitlines())
            except BlockingIOError:
                break
        assert "STOPPING=1" in messages
    finally:
        sock.close()
