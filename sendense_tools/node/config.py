"""node.toml schema."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sendense_tools.config import HostPort, PortRange, Strict
from sendense_tools.nbd.buffers import DEFAULT_BUDGET, MIN_BUDGET, MIN_SLOTS, NODE_DISKS
from sendense_tools.node.forwards import is_loopback
from sendense_tools.policy.model import Policy, check_policies


class ApiSection(Strict):
    listen: HostPort = ("127.0.0.1", 8081)
    token_file: str = "/etc/sendense/api-token"


class NodeSection(Strict):
    id: str = "node1"
    # Job records and final reports that the hub has not taken yet; both outlive
    # a restart (the unit's StateDirectory=sendense).
    spool_dir: str = "/var/lib/sendense/spool"


class HubSection(Strict):
    api_url: str = "http://127.0.0.1:8082"
    # Token this node presents to the hub; defaults to the node API token.
    token_file: str | None = None
    # Seconds between running-progress reports to the hub (the final one is sent at once).
    report_interval: float = Field(default=1.0, gt=0, le=60)
    # A running job reports at least this often even when nothing changed, so
    # the hub's [jobs] stall_timeout only fires on a real stall.
    heartbeat_interval: float = Field(default=30.0, gt=0, le=3600)
    # Backoff between attempts to hand the hub a final report: it is retried
    # until the hub has taken or refused it, however long that takes.
    report_retry_initial: float = Field(default=5.0, gt=0)
    report_retry_max: float = Field(default=60.0, gt=0)
    # Where this node's tunnel binds its NBD forwards ([forwards].bind of
    # tunnel.toml). The hub names its own loopback bind address in nbd_targets;
    # the node connects to the same port on this address.
    nbd_host: str = "127.0.0.1"
    # The tunnel's NBD forwards ([forwards].nbd_ports of tunnel.toml): a start
    # request naming any other port (or host, or a unix socket) is refused.
    nbd_ports: PortRange = (10100, 10200)

    @field_validator("nbd_host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if not is_loopback(value):
            raise ValueError(f"nbd_host {value!r} is not a loopback address")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> HubSection:
        if self.heartbeat_interval < self.report_interval:
            raise ValueError("heartbeat_interval must not be shorter than report_interval")
        if self.report_retry_max < self.report_retry_initial:
            raise ValueError("report_retry_max must not be shorter than report_retry_initial")
        return self


class VcenterSection(Strict):
    url: str = "https://vcenter.example"
    user: str = "administrator@vsphere.local"
    password_file: str = "/etc/sendense/vcenter-password"
    # SHA-1 (colon hex) of vCenter's certificate; empty = verify with the CA store.
    thumbprint: str = ""
    # Only when named explicitly: skip certificate verification (labs only).
    insecure: bool = False
    # CA bundle to verify vCenter with; empty = the system store.
    ca_file: str = ""


class BackupSection(Strict):
    transport: Literal["https", "vddk", "file"] = "https"
    # sshd gives each channel a 2 MiB window: one NBD connection moves at most 2 MiB per
    # round trip (about 40 MB/s at 50 ms), so a site behind a long link wants 8 (within
    # the hub's qemu-nbd --shared=10; bench/tunnel.py measures it). DESIGN's default: 2.
    connections_per_disk: int = Field(default=2, ge=1, le=16)
    quiesce: bool = False
    # Where the `file` transport finds disk images: <dir>/<vm>/<disk file name>.
    file_root: str = ""
    vddk_libdir: str = "/opt/vmware-vix-disklib-distrib"
    # How long a disk copy keeps retrying dropped NBD connections (tunnel outages).
    retry_for: float = Field(default=300.0, gt=0)
    # How long the node waits for vCenter to remove a snapshot (also on a stop:
    # the unit's TimeoutStopSec is derived from it, see node/stopping.py).
    snapshot_remove_timeout: float = Field(default=600.0, gt=0, le=86400)
    # Turn changed block tracking on for a VM that has it off, so that the
    # next backup can be an incremental.
    cbt: bool = True
    # Bytes of copy buffers (the data waiting to be hashed included) that all disk
    # copies running in this process share: one disk alone gets its full pool
    # (80 MiB), more disks split the budget evenly (nbd/buffers.py).
    memory_budget: int = DEFAULT_BUDGET

    @field_validator("memory_budget")
    @classmethod
    def _budget_fits_every_disk(cls, value: int) -> int:
        if value < MIN_BUDGET:
            raise ValueError(
                f"{value} bytes is below the minimum {MIN_BUDGET} ({MIN_BUDGET >> 20} MiB: "
                f"{MIN_SLOTS} buffers for each of {NODE_DISKS} disks copied at once)"
            )
        return value


class NodeConfig(Strict):
    api: ApiSection = ApiSection()
    node: NodeSection = NodeSection()
    hub: HubSection = HubSection()
    vcenter: VcenterSection = VcenterSection()
    backup: BackupSection = BackupSection()
    # [policies.<name>]: what `sendense policy run <name>` backs up (its timer is
    # rendered by the node role from the same inventory data).
    policies: dict[str, Policy] = {}

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: dict[str, Policy]) -> dict[str, Policy]:
        return check_policies(value)
