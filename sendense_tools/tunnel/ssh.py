"""Opening one tuned, host-key-pinned SSH connection to the hub."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncssh
from asyncssh.kex import get_kex_algs

from sendense_tools.errors import SendenseError
from sendense_tools.tunnel.config import TunnelConfig

# Key exchange the node offers, best first: the ML-KEM hybrid (post-quantum) with
# a hub whose OpenSSH has it (9.9+), else X25519. Never finite-field DH (DHEat,
# small groups) or NIST curves, which the hub's sshd refuses anyway.
_KEX_PREFERENCE = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
# Encrypt-then-MAC SHA-2: only used with a non-AEAD cipher from [tuning] ciphers.
MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


def kex_algs() -> list[str]:
    """The preferred key exchanges this asyncssh can do (ML-KEM needs a recent pyca)."""
    supported = set(get_kex_algs())
    return [alg for alg in _KEX_PREFERENCE if alg.encode() in supported]


class HostKeyMismatch(SendenseError):
    """The hub presented a host key that known_hosts does not pin."""


class _Client(asyncssh.SSHClient):
    """Remembers why the connection ended, for the log and the status file."""

    def __init__(self) -> None:
        self.lost_reason: Exception | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        # asyncssh already sets TCP_NODELAY; keepalives at the TCP level also
        # catch a peer that vanished while no SSH keepalive was due yet.
        sock = conn.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_reason = exc


def connection_options(cfg: TunnelConfig) -> asyncssh.SSHClientConnectionOptions:
    hub, tuning, ka = cfg.hub, cfg.tuning, cfg.keepalive
    return asyncssh.SSHClientConnectionOptions(
        username=hub.user,
        client_keys=[hub.key_file],
        known_hosts=hub.known_hosts,
        # No agent, no ~/.ssh config, no password prompts: only the pinned key pair.
        agent_path=None,
        config=[],
        password=None,
        kbdint_auth=False,
        gss_auth=False,
        host_based_auth=False,
        kex_algs=kex_algs(),
        encryption_algs=list(tuning.ciphers),
        mac_algs=list(MAC_ALGS),
        compression_algs=["none"],
        window=tuning.window,
        max_pktsize=tuning.max_pktsize,
        keepalive_interval=ka.interval,
        keepalive_count_max=ka.count_max,
        connect_timeout=hub.connect_timeout,
        login_timeout=hub.connect_timeout,
    )


def known_host_keys(known_hosts: str, host: str, port: int) -> list:
    """The keys known_hosts pins for host:port (empty when the hub is not listed)."""
    try:
        kh = asyncssh.read_known_hosts(known_hosts)
    except (OSError, ValueError, asyncssh.KeyImportError):
        return []
    addr = host if _is_ip(host) else ""
    return list(kh.match(host, addr, port)[0])


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def explain_host_key_error(cfg: TunnelConfig, exc: Exception) -> str:
    hub = cfg.hub
    if not Path(hub.known_hosts).exists():
        return f"known_hosts file {hub.known_hosts} does not exist; refusing to trust the hub"
    if known_host_keys(hub.known_hosts, hub.host, hub.port):
        return (
            f"HOST KEY CHANGED: hub {hub.host}:{hub.port} presented a host key that does not "
            f"match the key pinned in {hub.known_hosts} (possible man-in-the-middle); "
            "refusing to connect"
        )
    return (
        f"hub {hub.host}:{hub.port} is not in {hub.known_hosts}; refusing to trust an "
        f"unpinned host key ({exc})"
    )


async def connect(cfg: TunnelConfig) -> tuple[asyncssh.SSHClientConnection, _Client]:
    """One connection attempt; raises HostKeyMismatch, or OSError/asyncssh.Error/TimeoutError."""
    holder: list[_Client] = []

    def factory() -> _Client:
        client = _Client()
        holder.append(client)
        return client

    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                cfg.hub.host,
                cfg.hub.port,
                client_factory=factory,
                options=connection_options(cfg),
            ),
            timeout=cfg.hub.connect_timeout * 2,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyMismatch(explain_host_key_error(cfg, exc)) from None
    return conn, holder[0]


def describe_error(exc: BaseException) -> str:
    """One line for the log and status file."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"authentication refused by the hub: {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{type(exc).__name__}: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__
