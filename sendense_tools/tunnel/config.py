"""tunnel.toml schema."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from sendense_tools.config import HostPort, PortRange, Strict

# The hub's `[nbd] socket_dir` default, and how a node's tunnel user is named.
DEFAULT_SOCKET_DIR = "/run/sendense/nbd"
TUNNEL_USER_PREFIX = "sdt-"


class HubSection(Strict):
    host: str = "hub.example"
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "sdt-node1"
    key_file: str = "/etc/sendense/tunnel/id_ed25519"
    known_hosts: str = "/etc/sendense/tunnel/known_hosts"
    # Bounds one connection attempt (TCP connect + key exchange + auth).
    connect_timeout: float = Field(default=15, gt=0)


class ForwardsSection(Strict):
    nbd_ports: PortRange = (10100, 10200)
    # "unix": local 127.0.0.1:<slot> -> <nbd_socket_dir>/<slot>.sock on the hub (this
    # node's own sockets); "tcp": the old layout, -> the hub's 127.0.0.1:<slot>.
    nbd_listen: Literal["unix", "tcp"] = "unix"
    # The hub-side directory of this node's sockets; "" = /run/sendense/nbd/<id>,
    # <id> being [hub] user without its "sdt-" prefix.
    nbd_socket_dir: str = ""
    api_port: int = Field(default=8082, ge=1, le=65535)
    reverse_port: int = Field(default=9081, ge=1, le=65535)
    reverse_target: HostPort = ("127.0.0.1", 8081)
    bind: str = "127.0.0.1"
    # A client that connects while the hub is unreachable waits this long for
    # the tunnel to come back, then is closed: it never hangs forever.
    outage_wait: float = Field(default=10, ge=0)

    @field_validator("bind")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        # The forwards carry unauthenticated NBD: never expose them off the host.
        try:
            if ipaddress.ip_address(value).is_loopback:
                return value
        except ValueError:
            pass
        raise ValueError(f"bind {value!r} is not a loopback address")

    @field_validator("nbd_socket_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"nbd_socket_dir {value!r} is not an absolute path")
        return value.rstrip("/") if value != "/" else value


class BackoffSection(Strict):
    initial: float = Field(default=5, gt=0)
    max: float = Field(default=60, gt=0)
    # A connection that stayed up this long resets the delay to `initial`.
    reset_after: float = Field(default=60, gt=0)


class KeepaliveSection(Strict):
    interval: float = Field(default=30, gt=0)
    count_max: int = Field(default=3, ge=1)


class TuningSection(Strict):
    # Several SSH connections with the NBD ports spread across them lift the
    # per-TCP-connection limit on a long-RTT link.
    connections: int = Field(default=1, ge=1, le=16)
    window: int = Field(default=16 * 1024 * 1024, ge=2 * 1024 * 1024)
    max_pktsize: int = Field(default=256 * 1024, ge=32 * 1024)
    ciphers: list[str] = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr"]


class StatusSection(Strict):
    file: str = "/run/sendense/tunnel-status.json"


class TunnelConfig(Strict):
    hub: HubSection = HubSection()
    forwards: ForwardsSection = ForwardsSection()
    backoff: BackoffSection = BackoffSection()
    keepalive: KeepaliveSection = KeepaliveSection()
    tuning: TuningSection = TuningSection()
    status: StatusSection = StatusSection()

    @property
    def node_socket_dir(self) -> str:
        """Where this node's slot sockets are on the hub (unix layout)."""
        if self.forwards.nbd_socket_dir:
            return self.forwards.nbd_socket_dir
        return f"{DEFAULT_SOCKET_DIR}/{self.hub.user.removeprefix(TUNNEL_USER_PREFIX)}"

    def slot_target(self, slot: int) -> str:
        """What the local forward of `slot` leads to on the hub: a socket path or host:port."""
        if self.forwards.nbd_listen == "unix":
            return f"{self.node_socket_dir}/{slot}.sock"
        return f"127.0.0.1:{slot}"
