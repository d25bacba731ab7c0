"""One backup job as the hub holds it while it runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from sendense_tools.hub.exports import Export
from sendense_tools.hub.nodeclient import NodeClient
from sendense_tools.hub.parent import Plan


@dataclass
class Job:
    id: str
    node: str
    vm: str
    # Kept with the job: a node removed from the table is still told to cancel.
    client: NodeClient
    # Which node API the job lives under: "backup" or "restore".
    kind: str = "backup"
    # What was asked for (auto, full, incremental) and the parent the hub found for it.
    mode: str = "auto"
    plan: Plan = field(default_factory=lambda: Plan(None, None))
    # The node's policy that asked for this backup (None: asked by hand).
    policy: str | None = None
    exports: dict[str, Export] = field(default_factory=dict)
    key_dir: Path | None = None
    tls_username: str | None = None
    node_started: bool = False
    # The task starting the job, until the node took it: an end asked for meanwhile
    # cancels that task (`ending` says how the job ends), which then tears down
    # everything it started, including what it was starting at that moment.
    starter: asyncio.Task | None = None
    ending: tuple[str, str] | None = None
    # Set once the job is on its way out; later crash reports and cancels are ignored.
    closing: bool = False
    # Stall detection: when the node last reported, and a wake-up when it does.
    last_report: float = field(default_factory=time.monotonic)
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task | None = None

    @property
    def psk_file(self) -> Path | None:
        return self.key_dir / "keys.psk" if self.key_dir else None

    def report_seen(self) -> None:
        self.last_report = time.monotonic()
        self.reported.set()

    def silent_for(self) -> float:
        return time.monotonic() - self.last_report
