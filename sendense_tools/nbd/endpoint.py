"""Where a disk is read from or written to: an NBD URI plus optional TLS-PSK credentials."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

DEFAULT_PORT = 10809
_DISK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


@dataclass(frozen=True)
class TlsPsk:
    username: str
    psk_hex: str

    def __post_init__(self) -> None:
        if not self.username or ":" in self.username or "\n" in self.username:
            raise ValueError(f"TLS username {self.username!r}: must be non-empty, without ':'")
        if not _HEX.match(self.psk_hex):
            raise ValueError("TLS PSK: must be an even number of hex digits")

    def __repr__(self) -> str:  # never print the key
        return f"TlsPsk(username={self.username!r}, psk_hex='***')"


@dataclass(frozen=True)
class NbdAddress:
    """A parsed NBD URI: TCP (host, port) or a unix socket, and the export name."""

    export: str
    host: str | None = None
    port: int | None = None
    socket: str | None = None


@dataclass(frozen=True)
class NbdEndpoint:
    uri: str  # "nbd://127.0.0.1:10100/export" or "nbd+unix:///export?socket=/path"
    tls: TlsPsk | None = None
    # For a server this process runs (the node's nbdkit): why it is gone, or None
    # while it serves. A copy retries a lost connection only while its server runs.
    server_gone: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        parse_nbd_uri(self.uri)  # reject a bad URI where it is made, not mid-copy

    @property
    def address(self) -> NbdAddress:
        return parse_nbd_uri(self.uri)


def parse_nbd_uri(uri: str) -> NbdAddress:
    """Parse the two URI forms we use; ValueError("<uri>: <why>") otherwise."""
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        raise ValueError(f"{uri}: {e}") from None
    export = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.scheme == "nbd":
        if parts.query:
            raise ValueError(f"{uri}: query parameters are not supported")
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ValueError(f"{uri}: bad port") from None
        if not host:
            raise ValueError(f"{uri}: missing host")
        if port == 0:
            raise ValueError(f"{uri}: bad port 0")
        return NbdAddress(export=export, host=host, port=port or DEFAULT_PORT)
    if parts.scheme == "nbd+unix":
        if parts.netloc:
            raise ValueError(f"{uri}: a unix URI has no host (use nbd+unix:///export?socket=PATH)")
        sockets = parse_qs(parts.query).get("socket", [])
        if len(sockets) != 1 or not sockets[0]:
            raise ValueError(f"{uri}: needs exactly one socket=PATH")
        return NbdAddress(export=export, socket=sockets[0])
    raise ValueError(f"{uri}: scheme must be nbd:// or nbd+unix://")


def parse_nbd_targets(text: str, tls: TlsPsk | None = None) -> dict[str, NbdEndpoint]:
    """Parse the seed's form "disk0:nbd://h:p/exp,disk1:nbd://h:p/exp" (disk ids in order)."""
    targets: dict[str, NbdEndpoint] = {}
    if not text.strip():
        raise ValueError("nbd targets: empty")
    for raw in text.split(","):
        part = raw.strip()
        disk_id, sep, uri = part.partition(":")
        if not sep or not uri:
            raise ValueError(f"{part or '(empty)'}: expected DISK_ID:nbd://HOST:PORT/EXPORT")
        if not _DISK_ID.match(disk_id):
            raise ValueError(f"{part}: bad disk id {disk_id!r}")
        if disk_id in targets:
            raise ValueError(f"{part}: disk id {disk_id} given twice")
        try:
            targets[disk_id] = NbdEndpoint(uri, tls)
        except ValueError as e:
            raise ValueError(f"{disk_id}:{e}") from None
    return targets


def format_nbd_targets(targets: dict[str, NbdEndpoint]) -> str:
    return ",".join(f"{disk_id}:{ep.uri}" for disk_id, ep in targets.items())


def targets_from_host_port(
    host: str,
    first_port: int,
    disk_ids: list[str],
    export_names: list[str] | None = None,
    tls: TlsPsk | None = None,
) -> dict[str, NbdEndpoint]:
    """The seed's --nbd-host/--nbd-port form: disk i on first_port + i.

    Without export names every export is "" (qemu-nbd's default when started without -x).
    """
    if export_names is not None and len(export_names) != len(disk_ids):
        raise ValueError(f"export names: {len(export_names)} given for {len(disk_ids)} disks")
    if first_port < 1 or first_port + len(disk_ids) - 1 > 65535:
        raise ValueError(f"nbd port {first_port}: {len(disk_ids)} disks need ports up to 65535")
    host_part = f"[{host}]" if ":" in host else host
    exports = export_names if export_names is not None else [""] * len(disk_ids)
    text = ",".join(
        f"{disk_id}:nbd://{host_part}:{first_port + i}/{exports[i]}"
        for i, disk_id in enumerate(disk_ids)
    )
    return parse_nbd_targets(text, tls)
