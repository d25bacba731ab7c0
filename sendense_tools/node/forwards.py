"""The only places a node streams disks to: its own tunnel's NBD forwards.

Whoever holds the node's token could otherwise name any host or socket in
nbd_targets and receive a VM's disks there. The hub names its own loopback
bind address in the targets; the node keeps only the port and export and
connects to the address its tunnel binds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sendense_tools.nbd.endpoint import NbdEndpoint


class TargetRefused(ValueError):
    """A target outside this node's tunnel forwards (the message names it)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TunnelForwards:
    host: str
    ports: tuple[int, int]

    def describe(self) -> str:
        lo, hi = self.ports
        return f"nbd://{self.host}:{lo}-{hi}/EXPORT"

    def route(self, disk_id: str, target: NbdEndpoint, field: str = "nbd_targets") -> NbdEndpoint:
        """`target` as reached through the tunnel; TargetRefused if it is not a forward."""
        addr = target.address
        lo, hi = self.ports
        if addr.port is None or addr.host is None:
            why = "not a TCP target"
        elif addr.host != self.host and not is_loopback(addr.host):
            why = f"host {addr.host} is not this node's tunnel"
        elif not lo <= addr.port <= hi:
            why = f"port {addr.port} is outside the tunnel's NBD ports {lo}-{hi}"
        else:
            return NbdEndpoint(f"nbd://{self.host}:{addr.port}/{addr.export}", target.tls)
        raise TargetRefused(
            f"{field}: {disk_id}:{target.uri}: {why} (only {self.describe()} is accepted)"
        )

    def route_all(
        self, targets: dict[str, NbdEndpoint], field: str = "nbd_targets"
    ) -> dict[str, NbdEndpoint]:
        return {disk_id: self.route(disk_id, t, field) for disk_id, t in targets.items()}
