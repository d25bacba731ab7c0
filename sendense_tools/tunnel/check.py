"""`sendense tunnel check`: the pre-flight checks, each one PASS or FAIL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from sendense_tools.tunnel.config import TunnelConfig
from sendense_tools.tunnel.ssh import HostKeyMismatch, connect, describe_error, known_host_keys


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def check_key(cfg: TunnelConfig) -> CheckResult:
    path = Path(cfg.hub.key_file)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return CheckResult("key", False, f"private key {path} does not exist")
    except OSError as exc:
        return CheckResult("key", False, f"private key {path}: {exc.strerror}")
    if mode & 0o077:
        return CheckResult("key", False, f"private key {path} has mode {mode:04o}; must be 0600")
    try:
        asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as exc:
        return CheckResult("key", False, f"private key {path} is unusable: {exc}")
    return CheckResult("key", True, f"private key {path} exists with mode {mode:04o}")


def check_known_hosts(cfg: TunnelConfig) -> CheckResult:
    hub = cfg.hub
    if not Path(hub.known_hosts).is_file():
        return CheckResult("known_hosts", False, f"{hub.known_hosts} does not exist")
    keys = known_host_keys(hub.known_hosts, hub.host, hub.port)
    if not keys:
        return CheckResult(
            "known_hosts", False, f"{hub.known_hosts} has no key for {hub.host}:{hub.port}"
        )
    return CheckResult(
        "known_hosts", True, f"{hub.known_hosts} pins {len(keys)} key(s) for {hub.host}:{hub.port}"
    )


def check_reachable(cfg: TunnelConfig) -> CheckResult:
    hub = cfg.hub
    try:
        with socket.create_connection((hub.host, hub.port), timeout=hub.connect_timeout):
            pass
    except OSError as exc:
        return CheckResult(
            "reachable", False, f"hub {hub.host}:{hub.port} unreachable: {describe_error(exc)}"
        )
    return CheckResult("reachable", True, f"hub {hub.host}:{hub.port} accepts TCP connections")


async def _channel_refusal(opening: Awaitable[tuple[Any, Any]]) -> int | None:
    """None when the hub opened the channel (closed again at once), else the refusal code."""
    try:
        chan, _ = await opening
    except asyncssh.ChannelOpenError as exc:
        return exc.code
    chan.close()
    return None


async def _check_forwards(conn: asyncssh.SSHClientConnection, cfg: TunnelConfig) -> CheckResult:
    """The hub API answers through the tunnel, and (old layout) sshd permits the slot ports.

    A TCP port that PermitOpen does not list is refused "administratively
    prohibited", one with nothing listening "connect failed". sshd refuses every
    stream-local channel with "connect failed" whatever the cause, and a node's
    sockets exist only while its backups run: the unix slots are named, not probed.
    """
    fw = cfg.forwards
    slots = (fw.nbd_ports[0], fw.nbd_ports[1])
    if fw.nbd_listen == "tcp":
        for slot in slots:
            refusal = await _channel_refusal(
                conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", slot)
            )
            if refusal == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                return CheckResult(
                    "forwards",
                    False,
                    f"the hub's sshd refuses 127.0.0.1:{slot} to {cfg.hub.user} (PermitOpen)",
                )
    refusal = await _channel_refusal(
        conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", fw.api_port)
    )
    if refusal is not None:
        why = (
            "refused by its sshd"
            if refusal == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
            else ("not answering")
        )
        return CheckResult("forwards", False, f"hub API 127.0.0.1:{fw.api_port} {why}")
    first, last = (cfg.slot_target(s) for s in slots)
    return CheckResult(
        "forwards", True, f"NBD slots lead to {first} .. {last}; API 127.0.0.1:{fw.api_port}"
    )


async def _authenticate(cfg: TunnelConfig) -> list[CheckResult]:
    try:
        conn, _ = await connect(cfg)
    except HostKeyMismatch as exc:
        return [CheckResult("auth", False, str(exc))]
    except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
        return [
            CheckResult("auth", False, f"SSH login as {cfg.hub.user} failed: {describe_error(exc)}")
        ]
    try:
        forwards = await _check_forwards(conn, cfg)
    finally:
        conn.close()
        await conn.wait_closed()
    auth = CheckResult("auth", True, f"logged in as {cfg.hub.user}; hub host key matches the pin")
    return [auth, forwards]


def run_checks(cfg: TunnelConfig) -> list[CheckResult]:
    return [
        check_key(cfg),
        check_known_hosts(cfg),
        check_reachable(cfg),
        *asyncio.run(_authenticate(cfg)),
    ]
