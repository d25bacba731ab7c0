"""node.toml schema."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sendense_tools.config import HostPort, Strict


class ApiSection(Strict):
    listen: HostPort = ("127.0.0.1", 8081)
    token_file: str = "/etc/sendense/api-token"


class NodeSection(Strict):
    id: str = "node1"


class HubSection(Strict):
    api_url: str = "http://127.0.0.1:8082"
    # Token this node presents to the hub; defaults to the node API token.
    token_file: str | None = None


class VcenterSection(Strict):
    url: str = "https://vcenter.example"
    user: str = "administrator@vsphere.local"
    password_file: str = "/etc/sendense/vcenter-password"
    # SHA-1 (colon hex) of vCenter's certificate; empty = verify with the CA store.
    thumbprint: str = ""
    # Only when named explicitly: skip certificate verification (labs only).
    insecure: bool = False


class BackupSection(Strict):
    transport: Literal["https", "vddk", "file"] = "https"
    connections_per_disk: int = Field(default=2, ge=1, le=16)
    quiesce: bool = False
    # Where the `file` transport finds disk images: <dir>/<vm>/<disk file name>.
    file_root: str = ""
    vddk_libdir: str = "/opt/vmware-vix-disklib-distrib"


class NodeConfig(Strict):
    api: ApiSection = ApiSection()
    node: NodeSection = NodeSection()
    hub: HubSection = HubSection()
    vcenter: VcenterSection = VcenterSection()
    backup: BackupSection = BackupSection()
