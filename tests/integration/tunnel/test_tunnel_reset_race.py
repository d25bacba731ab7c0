"""A node client that resets its socket while the hub end's EOF is already on its way
must not end the SSH connection: asyncssh closes the whole connection on any exception
raised from a channel callback, and asyncio's write_eof() raises ENOTCONN on a reset socket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct

from tests.integration.tunnel.conftest import NODE_BIND


async def test_a_client_reset_racing_the_hubs_eof_keeps_the_ssh_connection(sshd, start_tunnel):
    slot = sshd.slots[0]
    got, release = asyncio.Event(), asyncio.Event()

    async def close_when_told(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        got.set()
        await release.wait()
        writer.close()

    path = sshd.slot_socket(slot)
    server = await asyncio.start_unix_server(close_when_told, str(path))
    os.chmod(path, 0o770)
    tunnel = await start_tunnel()
    await tunnel.wait_up()
    client = socket.create_connection((NODE_BIND, slot))
    client.sendall(b"x")
    await asyncio.wait_for(got.wait(), 30)
    # Stopped, the tunnel sees both events in one loop turn: the EOF (queued first), then
    # the reset, as happens when 202 NBD connections close at once.
    os.kill(tunnel.proc.pid, signal.SIGSTOP)
    try:
        release.set()
        await asyncio.sleep(0.5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await asyncio.sleep(0.2)
    finally:
        os.kill(tunnel.proc.pid, signal.SIGCONT)
    await tunnel.wait_up()
    await asyncio.sleep(1)
    server.close()
    assert "event=connection_lost" not in tunnel.log(), tunnel.log()
