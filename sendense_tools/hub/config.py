"""hub.toml schema."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sendense_tools.config import HostPort, PortRange, Strict


class ApiSection(Strict):
    listen: HostPort = ("127.0.0.1", 8082)
    token_file: str = "/etc/sendense/api-token"
    # Seconds the hub waits for a node's API (through the reverse tunnel).
    node_timeout: float = Field(default=30.0, gt=0)


class NbdSection(Strict):
    port_range: PortRange = (10100, 10200)
    bind: str = "127.0.0.1"
    shared: int = Field(default=10, ge=1, le=255)
    # Per-job TLS-PSK on every export (the key goes to the node in the start call).
    tls_psk: bool = True
    # Where per-job PSK directories live; empty = "nbd-keys" next to [state].db.
    key_dir: str = ""
    # qemu-nbd target options (ovirt-imageio's, with io_uring instead of native
    # AIO: native needs fs.aio-max-nr >= 1024 per export, so the default 65536
    # stops at 64 exports). At start the hub checks the pair works on the
    # repository and falls back to writeback / threads (e.g. tmpfs, no io_uring).
    cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    aio: Literal["native", "threads", "io_uring"] = "io_uring"
    detect_zeroes: Literal["off", "on", "unmap"] = "unmap"
    # Seconds for a qemu-nbd to answer an NBD handshake before the job fails.
    ready_timeout: float = Field(default=30.0, gt=0)


class RepositorySection(Strict):
    path: str = "/var/lib/sendense/repository"


class StateSection(Strict):
    db: str = "/var/lib/sendense/hub.db"


class NodeEntry(Strict):
    api_url: str = "http://127.0.0.1:9081"
    # Per-node token: the hub uses it to call the node and to tell which node
    # a request on its own API comes from (records are visible per node only).
    # The one key without a default: any shared fallback (the admin token, as
    # before) would let that node see and cancel every node's backups.
    token_file: str


class HubConfig(Strict):
    api: ApiSection = ApiSection()
    nbd: NbdSection = NbdSection()
    repository: RepositorySection = RepositorySection()
    state: StateSection = StateSection()
    nodes: dict[str, NodeEntry] = {}
