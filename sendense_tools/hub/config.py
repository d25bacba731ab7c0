"""hub.toml schema."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sendense_tools.config import HostPort, PortRange, Strict
from sendense_tools.policy.model import Policy, check_policies

# sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class ApiSection(Strict):
    listen: HostPort = ("127.0.0.1", 8082)
    token_file: str = "/etc/sendense/api-token"
    # Seconds the hub waits for a node's API (through the reverse tunnel).
    node_timeout: float = Field(default=30.0, gt=0)


class NbdSection(Strict):
    # The slots EACH node has for itself (in "tcp" mode: one pool for all nodes).
    port_range: PortRange = (10100, 10200)
    # "unix": export of node N, slot S on <socket_dir>/<N>/<S>.sock, isolated per
    # node by sshd and the directory's group. "tcp": the old layout, TCP exports
    # on `bind`, kept only to compare against it (bench).
    listen: Literal["unix", "tcp"] = "unix"
    socket_dir: str = "/run/sendense/nbd"
    bind: str = "127.0.0.1"
    # Hub-wide cap on concurrent qemu-nbd (404 = four nodes' full pools).
    max_exports: int = Field(default=404, ge=1)
    shared: int = Field(default=10, ge=1, le=255)
    # Per-job TLS-PSK on every export (the key goes to the node in the start call):
    # defence in depth only, the SSH connection already encrypts.
    tls_psk: bool = False
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

    @field_validator("socket_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"socket_dir {value!r} is not an absolute path")
        return value.rstrip("/") or "/"


class RepositorySection(Strict):
    path: str = "/var/lib/sendense/repository"


class StateSection(Strict):
    db: str = "/var/lib/sendense/hub.db"


class JobsSection(Strict):
    # Seconds without a progress report before the hub asks the node about a job
    # (the node reports at least every 30 s while it copies).
    stall_timeout: float = Field(default=300.0, gt=0)


class NodeEntry(Strict):
    api_url: str = "http://127.0.0.1:9081"
    # Per-node token: the hub uses it to call the node and to tell which node
    # a request on its own API comes from (records are visible per node only).
    # The one key without a default: any shared fallback (the admin token, as
    # before) would let that node see and cancel every node's backups.
    token_file: str
    # The node's backup policies (the same inventory data its node.toml holds): the
    # hub prunes by their keep counts and alerts by their schedules.
    policies: dict[str, Policy] = {}

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: dict[str, Policy]) -> dict[str, Policy]:
        return check_policies(value)


class HubConfig(Strict):
    api: ApiSection = ApiSection()
    nbd: NbdSection = NbdSection()
    repository: RepositorySection = RepositorySection()
    state: StateSection = StateSection()
    jobs: JobsSection = JobsSection()
    nodes: dict[str, NodeEntry] = {}

    @model_validator(mode="after")
    def _node_ids_fit_paths(self) -> HubConfig:
        # A node id names its socket directory, its tunnel user and its group.
        for node in self.nodes:
            if not NODE_ID.fullmatch(node):
                raise ValueError(f"nodes.{node}: a node id is letters, digits, '.', '_', '-'")
            longest = f"{self.nbd.socket_dir}/{node}/{self.nbd.port_range[1]}.sock"
            if self.nbd.listen == "unix" and len(longest.encode()) > MAX_SOCKET_PATH:
                raise ValueError(
                    f"nodes.{node}: socket path {longest} is longer than {MAX_SOCKET_PATH} bytes"
                )
        return self
