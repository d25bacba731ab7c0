"""hub.toml schema."""

from __future__ import annotations

from pydantic import Field

from sendense_tools.config import HostPort, PortRange, Strict


class ApiSection(Strict):
    listen: HostPort = ("127.0.0.1", 8082)
    token_file: str = "/etc/sendense/api-token"


class NbdSection(Strict):
    port_range: PortRange = (10100, 10200)
    bind: str = "127.0.0.1"
    shared: int = Field(default=10, ge=1, le=255)


class RepositorySection(Strict):
    path: str = "/var/lib/sendense/repository"


class StateSection(Strict):
    db: str = "/var/lib/sendense/hub.db"


class NodeEntry(Strict):
    api_url: str = "http://127.0.0.1:9081"
    # Per-node token: the hub uses it to call the node and to tell which node
    # a request on its own API comes from (records are visible per node only).
    token_file: str | None = None


class HubConfig(Strict):
    api: ApiSection = ApiSection()
    nbd: NbdSection = NbdSection()
    repository: RepositorySection = RepositorySection()
    state: StateSection = StateSection()
    nodes: dict[str, NodeEntry] = {}
