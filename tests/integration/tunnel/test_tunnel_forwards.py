"""`sendense tunnel run` against a real sshd holding the hub's tunnel policy."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import nbd

from tests.fixtures.ports import free_port, port_is_listening
from tests.fixtures.sshd import write_toml
from tests.integration.tunnel.conftest import NODE_BIND, echo_roundtrip, tunnel_command


async def test_every_forward_carries_data_both_ways(sshd, hub_echo, start_tunnel):
    tunnel = await start_tunnel()
    status = await tunnel.wait_up()
    assert status["forwards_total"] == len(hub_echo) + 1  # + the reverse forward
    # The slots lead to node a's own sockets on the hub, and the status says so.
    assert status["nbd_listen"] == "unix"
    assert status["nbd_targets"] == (
        f"{sshd.slot_socket(sshd.slots[0])} .. {sshd.slot_socket(sshd.slots[-1])}"
    )
    for port in hub_echo:
        payload = os.urandom(512 * 1024)
        assert await echo_roundtrip(port, payload) == payload, f"port {port}"
    # Several clients at once on one port, as the copy engine does per disk.
    payloads = [os.urandom(256 * 1024) for _ in range(4)]
    results = await asyncio.gather(*(echo_roundtrip(hub_echo[0], p) for p in payloads))
    assert results == payloads


async def test_listeners_are_bound_on_the_configured_loopback_address_only(sshd, start_tunnel):
    tunnel = await start_tunnel()
    await tunnel.wait_up()
    port = sshd.nbd_ports[0]
    assert port_is_listening(port, NODE_BIND)
    # Nothing on another interface address for that port.
    assert not port_is_listening(port, "127.0.0.3")


def _nbdkit_memory(socket: Path) -> subprocess.Popen:
    """An NBD server on node a's slot socket (group-connectable, like the hub's exports)."""
    proc = subprocess.Popen(
        ["nbdkit", "-f", "-U", str(socket), "memory", "64M"], stdin=subprocess.DEVNULL
    )
    for _ in range(200):
        if socket.exists():
            break
        time.sleep(0.05)
    # nbdkit makes its socket 0755 whatever the umask (qemu-nbd follows the umask).
    socket.chmod(0o770)
    return proc


async def test_nbd_reads_and_writes_through_a_forward_to_the_slot_socket(sshd, start_tunnel):
    port = sshd.nbd_ports[1]
    server = _nbdkit_memory(sshd.slot_socket(port))
    try:
        tunnel = await start_tunnel()
        await tunnel.wait_up()

        def nbd_io() -> tuple[bytes, bytes, int]:
            h = nbd.NBD()
            h.connect_uri(f"nbd://{NODE_BIND}:{port}")
            try:
                data = os.urandom(1024 * 1024)
                h.pwrite(data, 8 * 1024 * 1024)
                h.flush()
                return data, h.pread(len(data), 8 * 1024 * 1024), h.get_size()
            finally:
                h.shutdown()

        written, read, size = await asyncio.to_thread(nbd_io)
        assert read == written
        assert size == 64 * 1024 * 1024
    finally:
        server.terminate()
        server.wait()


async def test_reverse_forward_reaches_the_node_api(sshd, start_tunnel):
    seen: list[bytes] = []

    async def node_api(reader, writer):
        seen.append(await reader.readline())
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nnode says hi\n")
        await writer.drain()
        writer.close()

    api_port = free_port()
    server = await asyncio.start_server(node_api, "127.0.0.1", api_port)
    try:
        tunnel = await start_tunnel(forwards={"reverse_target": f"127.0.0.1:{api_port}"})
        status = await tunnel.wait_up()
        assert status["reverse_up"] is True
        # What the hub does: connect to its own loopback reverse port.
        reader, writer = await asyncio.open_connection("127.0.0.1", sshd.reverse_port)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
        assert reply.endswith(b"node says hi\n")
        assert seen == [b"GET /healthz HTTP/1.0\r\n"]
    finally:
        server.close()
        await server.wait_closed()


async def test_local_port_in_use_is_an_error_naming_the_port(sshd):
    busy = sshd.nbd_ports[0] + 1
    with socket.socket() as s:
        s.bind((NODE_BIND, busy))
        s.listen()
        config = sshd.base / "busy.toml"
        write_toml(config, sshd.tunnel_config(sshd.base / "busy-status.json"))
        proc = await asyncio.create_subprocess_exec(
            *tunnel_command("run", "--config", str(config)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"sendense: error: cannot listen on {NODE_BIND}:{busy}: the port is already in use"
    ]
    # It released the ports it had bound before the busy one.
    assert not port_is_listening(sshd.nbd_ports[0], NODE_BIND)
