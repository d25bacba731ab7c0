"""The hub's tunnel policy, rendered from the sendense_hub role's templates.

Each test logs in as node a's restricted tunnel user (sdt-a) with a plain SSH
client and tries what the policy must refuse, next to what it must allow (so
a test cannot pass because nothing works at all). Node b's sockets are real
and listening, so a refusal is sshd's or the kernel's, never a missing file.
"""

from __future__ import annotations

import asyncio
import subprocess

import asyncssh
import pytest

from tests.fixtures.sshd import (
    OTHER_NODE,
    OTHER_USER,
    SSHD,
    TEST_USER,
    Sshd,
    connect_as,
    render_template,
    running_sshd,
)
from tests.integration.tunnel.conftest import unix_echo


async def _login(sshd: Sshd, user: str | None = None) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        sshd.host,
        sshd.port,
        username=user or sshd.user,
        client_keys=[str(sshd.client_key)],
        known_hosts=str(sshd.known_hosts),
        agent_path=None,
    )


async def _echo(reader: asyncssh.SSHReader, writer: asyncssh.SSHWriter) -> bytes:
    writer.write(b"ping")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return data


async def _refused_by_sshd(sshd: Sshd, path: str, opening) -> bool:
    """The channel to `path` is refused, and by sshd's policy (its log says so)."""
    try:
        _, writer = await opening
    except asyncssh.ChannelOpenError:
        return await asyncio.to_thread(sshd.denied_path, path)
    writer.close()
    return False


@pytest.fixture
async def b_sockets(sshd: Sshd):
    """Node b's slot sockets, listening (an export of b is running on each)."""
    servers = [await unix_echo(sshd.slot_socket(s, OTHER_NODE)) for s in sshd.slots]
    yield [sshd.slot_socket(s, OTHER_NODE) for s in sshd.slots]
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_opens_its_own_sockets_and_the_api_and_sshd_refuses_b_s(sshd, hub_echo, b_sockets):
    async with await _login(sshd) as conn:
        for slot in sshd.slots:
            assert await _echo(*await conn.open_unix_connection(str(sshd.slot_socket(slot))))
        assert await _echo(*await conn.open_connection("127.0.0.1", sshd.api_port)) == b"ping"
        for path in map(str, b_sockets):
            assert await _refused_by_sshd(sshd, path, conn.open_unix_connection(path)), path
        # Not by another spelling of b's path either: PermitOpen compares it literally.
        sneaky = f"{sshd.socket_dir}/a/../{OTHER_NODE}/{sshd.slots[0]}.sock"
        assert await _refused_by_sshd(sshd, sneaky, conn.open_unix_connection(sneaky))
    async with await _login(sshd, OTHER_USER) as conn:
        # b itself reaches its sockets: the refusal above is about who asks.
        assert await _echo(*await conn.open_unix_connection(str(b_sockets[0]))) == b"ping"
        own_a = str(sshd.slot_socket(sshd.slots[0]))
        assert await _refused_by_sshd(sshd, own_a, conn.open_unix_connection(own_a))


async def test_no_tcp_forward_to_the_slot_ports_or_anything_else(sshd, hub_echo):
    # TCP listeners on the slot ports (as the old layout had): the policy no longer lists them.
    servers = [
        await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", p) for p in sshd.slots
    ]
    try:
        async with await _login(sshd) as conn:
            for port in sorted({*sshd.slots, sshd.port, sshd.slots[-1] + 1}):
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.open_connection("127.0.0.1", port)
            # Same port, other spelling of the host: PermitOpen is literal too.
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("localhost", sshd.api_port)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_the_kernel_keeps_sdt_a_out_of_b_s_sockets(sshd, hub_echo, b_sockets):
    own = sshd.slot_socket(sshd.slots[0])
    # Directory 2750 with group sdt-<node>: the other node's user cannot even look up the path.
    assert await asyncio.to_thread(connect_as, TEST_USER, own) == "ok"
    assert await asyncio.to_thread(connect_as, TEST_USER, b_sockets[0]) == "EACCES"
    assert await asyncio.to_thread(connect_as, OTHER_USER, b_sockets[0]) == "ok"
    assert await asyncio.to_thread(connect_as, OTHER_USER, own) == "EACCES"


async def test_listens_only_on_its_own_reverse_port(sshd):
    async with await _login(sshd) as conn:
        own = await conn.forward_remote_port("127.0.0.1", sshd.reverse_port, "127.0.0.1", 1)
        own.close()
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", sshd.other_reverse_port, "127.0.0.1", 1)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("0.0.0.0", sshd.reverse_port + 0, "127.0.0.1", 1)
        # Stream-local forwarding is "local" only: no remote socket listeners.
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_path(str(sshd.base / "listen.sock"), "/tmp/x.sock")


async def test_no_shell_no_command_no_pty_no_other_socket(sshd, tmp_path):
    async with await _login(sshd) as conn:
        for kwargs in ({}, {"term_type": "xterm"}):
            try:
                result = await asyncio.wait_for(conn.run("echo pwned-$((6*7))", **kwargs), 30)
            except asyncssh.ChannelOpenError:
                continue  # MaxSessions 0: no session channel at all
            assert "pwned-42" not in str(result.stdout)
            assert result.exit_status != 0
        # A real unix socket exists on the hub outside the node's list: still refused.
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
    ours = _effective(sshd, TEST_USER)
    expected_open = [f"[{sshd.slot_socket(p)}]:*" for p in sshd.slots]
    assert ours["permitopen"].split() == [*expected_open, f"127.0.0.1:{sshd.api_port}"]
    assert ours["permitlisten"] == f"127.0.0.1:{sshd.reverse_port}"
    for key, value in {
        "allowtcpforwarding": "yes",
        "allowstreamlocalforwarding": "local",
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
    theirs = _effective(sshd, OTHER_USER)
    assert theirs["permitlisten"] == f"127.0.0.1:{sshd.other_reverse_port}"
    assert str(sshd.slot_socket(sshd.slots[0], OTHER_NODE)) in theirs["permitopen"]
    assert str(sshd.slot_socket(sshd.slots[0])) not in theirs["permitopen"]
    # Users that are not tunnel users keep the main config's settings.
    assert _effective(sshd, "root")["permittty"] == "yes"


KEY = "ssh-ed25519 AAAA k"


def _production(listen: str) -> dict:
    nodes = [
        {"id": f"n{i}", "user": f"sdt-n{i}", "reverse_port": 9081 + i, "public_key": KEY}
        for i in range(3)
    ]
    return {
        "sendense_hub_tunnel_nodes": nodes,
        "sendense_hub_nbd_port_first": 10100,
        "sendense_hub_nbd_port_last": 10200,
        "sendense_hub_api_port": 8082,
        "sendense_hub_nbd_socket_dir": "/run/sendense/nbd",
        "sendense_hub_nbd_listen": listen,
    }


def test_production_sized_policy_lists_each_node_s_own_101_sockets(tmp_path):
    variables = _production("unix")
    conf = render_template("sshd_tunnel.conf.j2", **variables)
    lines = [line.split() for line in conf.splitlines()]
    opens = [words[1:] for words in lines if words and words[0] == "PermitOpen"]
    assert len(opens) == 3
    for i, o in enumerate(opens):
        assert len(o) == 102 and o[-1] == "127.0.0.1:8082"
        assert o[0] == f"[/run/sendense/nbd/n{i}/10100.sock]:*"
        assert o[100] == f"[/run/sendense/nbd/n{i}/10200.sock]:*"
        assert all(f"/nbd/n{i}/" in path for path in o[:-1])
    node1 = variables["sendense_hub_tunnel_nodes"][1]
    keys = render_template("tunnel_authorized_keys.j2", tunnel_node=node1, **variables)
    line = keys.strip().splitlines()[-1]
    assert line.startswith("restrict,port-forwarding,")
    assert line.count("permitopen=") == 102 and 'permitlisten="127.0.0.1:9082"' in line
    assert 'permitopen="[/run/sendense/nbd/n1/10150.sock]:*"' in line
    assert "/nbd/n0/" not in line and "9081" not in line and line.endswith(KEY)
    # sshd itself accepts the production-sized drop-in.
    (tmp_path / "tunnel.conf").write_text(conf)
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/tunnel.conf\nHostKey {key}\nUsePAM no\n")
    check = subprocess.run([SSHD, "-t", "-f", str(main)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_old_tcp_layout_lists_the_shared_ports():
    variables = _production("tcp")
    conf = render_template("sshd_tunnel.conf.j2", **variables)
    rows = [line.split() for line in conf.splitlines()]
    opens = [words[1:] for words in rows if words and words[0] == "PermitOpen"]
    assert len(opens) == 3 and all(len(o) == 102 and "127.0.0.1:10150" in o for o in opens)
    assert ".sock" not in conf and "AllowStreamLocalForwarding no" in conf


async def test_tcp_layout_policy_still_forwards_to_the_shared_ports():
    # The old layout, kept for the benchmark's comparison, still renders a working policy.
    with running_sshd(listen="tcp") as sshd:
        servers = [
            await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", p) for p in sshd.slots
        ]
        try:
            async with await _login(sshd) as conn:
                _, writer = await conn.open_connection("127.0.0.1", sshd.slots[0])
                writer.close()
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.open_unix_connection(str(sshd.slot_socket(sshd.slots[0])))
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
