"""One backup job as the hub holds it while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sendense_tools.hub.exports import Export
from sendense_tools.hub.nodeclient import NodeClient


@dataclass
class Job:
    id: str
    node: str
    vm: str
    # Kept with the job: a node removed from the table is still told to cancel.
    client: NodeClient
    exports: dict[str, Export] = field(default_factory=dict)
    key_dir: Path | None = None
    tls_username: str | None = None
    node_started: bool = False
    # Set once the job is on its way out; later crash reports and cancels are ignored.
    closing: bool = False

    @property
    def psk_file(self) -> Path | None:
        return self.key_dir / "keys.psk" if self.key_dir else None
