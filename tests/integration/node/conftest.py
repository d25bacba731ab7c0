"""Fixtures of the node tests: a recording hub, a slowed-down simulator, in-process nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from sendense_tools.api.server import serve_app
from sendense_tools.backup.executor import BackupOptions
from sendense_tools.node.api import make_app
from sendense_tools.node.forwards import TunnelForwards
from sendense_tools.node.jobs import JobManager
from sendense_tools.node.outbox import ReportOutbox
from sendense_tools.node.reporter import HubReporter
from sendense_tools.node.restores import RestoreManager
from sendense_tools.node.spool import Spool
from tests.fixtures.ports import free_port
from tests.fixtures.recording_hub import RecordingHub
from tests.fixtures.restores import restore_manager
from tests.fixtures.vcsim import VcsimLab, seeded_vcsim

TOKEN = "node-token-for-tests"
# Long enough for a test to see each step and act in it, like a busy vCenter.
STEP_MS = 1500
SLOW_METHODS = ("Login", "CreateSnapshot_Task", "RemoveSnapshot_Task")


@pytest.fixture
async def hub() -> AsyncIterator[RecordingHub]:
    """A recording hub, not yet up (tests that want it reachable call `await hub.up()`)."""
    recording = RecordingHub(TOKEN)
    yield recording
    await recording.down()


@pytest.fixture(scope="module")
def slow_vcsim() -> Iterator[VcsimLab]:
    """The simulator with logins and snapshot creation and removal taking STEP_MS each."""
    delays = ",".join(f"{m}={STEP_MS}" for m in SLOW_METHODS)
    with seeded_vcsim("-method-delay", delays) as lab:
        yield lab


class InProcessNode:
    """JobManager, RestoreManager and their API in the test's own loop, to look inside."""

    def __init__(self, jobs: JobManager, restores: RestoreManager, url: str, spool: Path) -> None:
        self.jobs = jobs
        self.restores = restores
        self.url = url
        self.spool = spool

    def client(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}
        )


@pytest.fixture
async def make_node(tmp_path):
    """Factory: an in-process node for a lab, reporting to a hub; stopped at the end."""
    made = []

    async def make(
        lab: VcsimLab, hub: RecordingHub, heartbeat: float = 30.0, stop_wait: float = 630.0
    ) -> InProcessNode:
        reporter = HubReporter(hub.url, TOKEN, interval=0.05, heartbeat=heartbeat)
        spool_dir = tmp_path / f"spool{len(made)}"
        outbox = ReportOutbox(Spool(spool_dir).open(), reporter, retry_initial=0.1, retry_max=0.5)
        jobs = JobManager(
            lambda: lab.params(), BackupOptions(retry_for=2), reporter, outbox, stop_wait
        )
        restores = restore_manager(lambda: lab.params(), reporter, spool_dir)
        port = free_port()
        app = make_app(jobs, TOKEN, TunnelForwards("127.0.0.1", (1, 65535)), restores)
        runner = await serve_app(app, "127.0.0.1", port)
        made.append((jobs, restores, runner))
        return InProcessNode(jobs, restores, f"http://127.0.0.1:{port}", spool_dir)

    yield make
    for jobs, restores, runner in made:
        await jobs.shutdown()
        await restores.shutdown()
        await runner.cleanup()
