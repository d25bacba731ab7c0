"""`sendense tunnel check`: the pre-flight checks, each one PASS or FAIL."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

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


async def _authenticate(cfg: TunnelConfig) -> CheckResult:
    try:
        conn, _ = await connect(cfg)
    except HostKeyMismatch as exc:
        return CheckResult("auth", False, str(exc))
    except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
        return CheckResult(
            "auth", False, f"SSH login as {cfg.hub.user} failed: {describe_error(exc)}"
        )
    conn.close()
    await conn.wait_closed()
    return CheckResult("auth", True, f"logged in as {cfg.hub.user}; hub host key matches the pin")


def run_checks(cfg: TunnelConfig) -> list[CheckResult]:
    return [
        check_key(cfg),
        check_known_hosts(cfg),
        check_reachable(cfg),
        asyncio.run(_authenticate(cfg)),
    ]
