"""The hub's sshd hardening, rendered from the sendense_hub role, audited on loopback.

The loopback sshd of tests/fixtures/sshd.py gets the role's base drop-in
(host key, algorithms, throttling) next to its tunnel policy, exactly as the
role installs them on a hub, so `make test` catches a weakened default
without Podman. The Molecule verify step audits the deployed hub the same way
(tests/infra/test_hub.py).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator

import asyncssh
import pytest

from sendense_tools.config import parse_config
from sendense_tools.tunnel.config import TunnelConfig
from sendense_tools.tunnel.ssh import connection_options
from tests.fixtures.roles import render, resolved_defaults
from tests.fixtures.ssh_audit import audit
from tests.fixtures.sshd import SSHD, Sshd, running_sshd

AEAD = {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}


def _apply_role_base_settings(server: Sshd) -> None:
    variables = resolved_defaults(
        "sendense_hub",
        sendense_hub_sshd_port=server.port,
        sendense_hub_host_key=f"{server.host_key}.pub",
    )
    (server.base / "sshd_config.d" / "10-sendense-base.conf").write_text(
        render("sendense_hub", "sshd_base.conf.j2", variables)
    )
    # HostKey and Port add up in sshd: the role's file now names both, so the
    # fixture's own lines go (sshd would offer the key twice, bind the port twice).
    lines = server.config.read_text().splitlines()
    server.config.write_text(
        "".join(f"{line}\n" for line in lines if not line.startswith(("HostKey ", "Port ")))
    )
    check = subprocess.run([SSHD, "-t", "-f", str(server.config)], capture_output=True, text=True)
    assert check.returncode == 0, f"sshd -t rejected the role's settings: {check.stderr}"


def hardened_sshd() -> contextlib.AbstractContextManager[Sshd]:
    return running_sshd(configure=_apply_role_base_settings)


@pytest.fixture(scope="module")
def hardened() -> Iterator[Sshd]:
    with hardened_sshd() as server:
        yield server


def test_ssh_audit_finds_no_failure(hardened):
    result = audit(hardened.host, hardened.port)
    assert result.algorithms["key"] == ("ssh-ed25519",)
    assert not result.failures, "\n".join(map(str, result.failures))
    assert not result.unexpected_warnings(), "\n".join(map(str, result.unexpected_warnings()))
    print("ssh-audit kept:", *map(str, result.warnings + result.notes), sep="\n  ")


def test_only_strong_algorithms_offered(hardened):
    offered = audit(hardened.host, hardened.port).algorithms
    assert set(offered["enc"]) <= AEAD
    assert all(mac.endswith("-etm@openssh.com") for mac in offered["mac"])
    assert not [k for k in offered["kex"] if k.startswith(("diffie-hellman", "ecdh-sha2"))]


def test_unauthenticated_connections_are_throttled(hardened):
    """PerSourceMaxStartups: a burst of unauthenticated connections from one source is cut."""
    limit = resolved_defaults("sendense_hub")["sendense_hub_sshd_per_source_max_startups"]
    socks = []
    try:
        for _ in range(limit + 3):
            s = socket.create_connection((hardened.host, hardened.port), timeout=10)
            socks.append(s)
        banners = []
        for s in socks:
            try:
                banners.append(s.recv(64))
            except (ConnectionError, TimeoutError):
                banners.append(b"")
        served = [b for b in banners if b.startswith(b"SSH-2.0-")]
        assert len(served) == limit, f"{len(served)} of {len(socks)} got a banner"
    finally:
        for s in socks:
            s.close()


async def test_tunnel_negotiates_aead(hardened, tmp_path):
    """The node's own client options (sendense_tools.tunnel.ssh) against the hardened hub."""
    cfg = parse_config(hardened.tunnel_config(tmp_path / "status.json"), TunnelConfig)
    async with asyncssh.connect(
        hardened.host, hardened.port, options=connection_options(cfg)
    ) as conn:
        cipher = conn.get_extra_info("send_cipher")
        assert cipher == conn.get_extra_info("recv_cipher")
        assert cipher in AEAD
        assert cipher == cfg.tuning.ciphers[0]


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    """The hardened hub for this module's `start_tunnel` (its own, not the shared one)."""
    with hardened_sshd() as server:
        yield server


async def test_several_tunnel_connections_come_up_without_a_refusal(start_tunnel):
    """More SSH connections than PerSourceMaxStartups all come up at the first attempt."""
    limit = resolved_defaults("sendense_hub")["sendense_hub_sshd_per_source_max_startups"]
    tunnel = await start_tunnel(tuning={"connections": limit + 2})
    up = await tunnel.wait_for(lambda s: s["connections_up"] == limit + 2, "every connection up")
    assert up["connected"] and up["reconnects"] == 0
    assert "event=connect_failed" not in tunnel.log()
