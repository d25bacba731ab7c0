"""`sendense tunnel run` with several SSH connections ([tuning] connections)."""

from __future__ import annotations

import asyncio
import os

from tests.integration.tunnel.conftest import NODE_BIND, echo_roundtrip

CONNECTIONS = 3


async def _echo_once(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
    """Whether one more message on an open forward comes back (False: it was reset)."""
    reader, writer = stream
    payload = os.urandom(64 * 1024)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 60) == payload
    except (ConnectionError, asyncio.IncompleteReadError):
        return False


async def test_forwards_spread_over_every_connection_and_a_lost_one_is_remade(
    sshd, hub_echo, start_tunnel
):
    tunnel = await start_tunnel(tuning={"connections": CONNECTIONS})
    up = await tunnel.wait_up()
    assert (up["connections"], up["connections_up"]) == (CONNECTIONS, CONNECTIONS)
    assert up["reverse_up"]
    assert len(sshd.sessions()) == CONNECTIONS

    # One long-lived client per connection: the channels go round the connections.
    streams = [await asyncio.open_connection(NODE_BIND, hub_echo[0]) for _ in range(CONNECTIONS)]
    try:
        assert [await _echo_once(s) for s in streams] == [True] * CONNECTIONS

        sshd.kill_session(sshd.sessions()[0])
        # Only the clients of the lost connection are reset; the others keep going.
        alive = [await _echo_once(s) for s in streams]
        assert alive.count(False) == 1, alive
        # While it is being re-made, new clients are served by the connections still up.
        payload = os.urandom(256 * 1024)
        assert await echo_roundtrip(hub_echo[1], payload) == payload

        again = await tunnel.wait_for(
            lambda s: s["connections_up"] == CONNECTIONS and s["reconnects"] >= 1
            and s["connected"] and s["reverse_up"],
            "the lost connection re-made",
        )  # fmt: skip
        assert again["pid"] == up["pid"]
        assert len(sshd.sessions()) == CONNECTIONS
        survivors = [s for s, ok in zip(streams, alive, strict=True) if ok]
        assert [await _echo_once(s) for s in survivors] == [True] * (CONNECTIONS - 1)
        log = tunnel.log()
        assert "event=connection_lost" in log and "event=retry_scheduled" in log
    finally:
        for _, writer in streams:
            writer.close()
