"""The hub's tunnel policy, rendered from the sendense_hub role's templates.

Each test logs in as the restricted tunnel user with a plain SSH client and
tries what the policy must refuse, next to what it must allow (so a test
cannot pass because nothing works at all).
"""

from __future__ import annotations

import asyncio
import subprocess

import asyncssh
import pytest

from tests.fixtures.sshd import SSHD, Sshd, render_template


async def _login(sshd: Sshd) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        sshd.host,
        sshd.port,
        username=sshd.user,
        client_keys=[str(sshd.client_key)],
        known_hosts=str(sshd.known_hosts),
        agent_path=None,
    )


async def _echo_through(conn: asyncssh.SSHClientConnection, port: int) -> bytes:
    reader, writer = await conn.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return data


async def test_forwards_only_to_the_listed_ports(sshd, hub_echo):
    async with await _login(sshd) as conn:
        for port in hub_echo:  # every NBD port and the API port
            assert await _echo_through(conn, port) == b"ping"
        outside = sorted({sshd.port, sshd.nbd_ports[1] + 1, sshd.nbd_ports[0] - 1})
        for port in outside:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", port)
        # Same port, other spelling of the host: PermitOpen is literal too.
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("localhost", hub_echo[0])


async def test_listens_only_on_its_own_reverse_port(sshd):
    async with await _login(sshd) as conn:
        own = await conn.forward_remote_port("127.0.0.1", sshd.reverse_port, "127.0.0.1", 1)
        own.close()
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", sshd.other_reverse_port, "127.0.0.1", 1)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("0.0.0.0", sshd.reverse_port + 0, "127.0.0.1", 1)


async def test_no_shell_no_command_no_pty_no_stream_local(sshd, tmp_path):
    async with await _login(sshd) as conn:
        for kwargs in ({}, {"term_type": "xterm"}):
            try:
                result = await asyncio.wait_for(conn.run("echo pwned-$((6*7))", **kwargs), 30)
            except asyncssh.ChannelOpenError:
                continue  # MaxSessions 0: no session channel at all
            assert "pwned-42" not in str(result.stdout)
            assert result.exit_status != 0
        # A real unix socket exists on the hub; forwarding to it is still refused.
        sock_path = sshd.base / "hub.sock"
        server = await asyncio.start_unix_server(lambda r, w: w.close(), str(sock_path))
        try:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_unix_connection(str(sock_path))
        finally:
            server.close()
            await server.wait_closed()


def _effective(sshd: Sshd, user: str) -> dict[str, str]:
    out = subprocess.run(
        [SSHD, "-T", "-f", str(sshd.config), "-C", f"user={user},host=node,addr=127.0.0.1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_effective_sshd_settings_per_node(sshd):
    ours = _effective(sshd, "sdt-test")
    expected_open = [f"127.0.0.1:{p}" for p in range(sshd.nbd_ports[0], sshd.nbd_ports[1] + 1)]
    assert ours["permitopen"].split() == [*expected_open, f"127.0.0.1:{sshd.api_port}"]
    assert ours["permitlisten"] == f"127.0.0.1:{sshd.reverse_port}"
    for key, value in {
        "allowtcpforwarding": "yes",
        "allowstreamlocalforwarding": "no",
        "allowagentforwarding": "no",
        "x11forwarding": "no",
        "permittty": "no",
        "permittunnel": "no",
        "permituserrc": "no",
        "gatewayports": "no",
        "maxsessions": "0",
        "forcecommand": "/usr/sbin/nologin",
    }.items():
        assert ours[key] == value, key
    assert _effective(sshd, "sdt-other")["permitlisten"] == f"127.0.0.1:{sshd.other_reverse_port}"
    # Users that are not tunnel users keep the main config's settings.
    assert _effective(sshd, "root")["permittty"] == "yes"


KEY = "ssh-ed25519 AAAA k"


def test_production_sized_policy_lists_every_port():
    nodes = [
        {"id": f"n{i}", "user": f"sdt-n{i}", "reverse_port": 9081 + i, "public_key": KEY}
        for i in range(3)
    ]
    variables = {
        "sendense_hub_tunnel_nodes": nodes,
        "sendense_hub_nbd_port_first": 10100,
        "sendense_hub_nbd_port_last": 10200,
        "sendense_hub_api_port": 8082,
    }
    conf = render_template("sshd_tunnel.conf.j2", **variables)
    lines = [line.split() for line in conf.splitlines()]
    opens = [words[1:] for words in lines if words and words[0] == "PermitOpen"]
    assert len(opens) == 3
    for o in opens:
        assert len(o) == 102 and "127.0.0.1:10150" in o and o[-1] == "127.0.0.1:8082"
    assert "-" not in " ".join(o for row in opens for o in row).replace("127.0.0.1", "")
    keys = render_template("tunnel_authorized_keys.j2", tunnel_node=nodes[1], **variables)
    line = keys.strip().splitlines()[-1]
    assert line.startswith("restrict,port-forwarding,")
    assert line.count("permitopen=") == 102 and 'permitlisten="127.0.0.1:9082"' in line
    assert "9081" not in line and line.endswith(KEY)
