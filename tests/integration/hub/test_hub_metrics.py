"""/metrics of a real hub after real backups (qemu-nbd writing qcow2 fulls and
overlays, the stand-in node's data path; and once through the whole stack: the real
node, tunnel and vCenter simulator): each series against what a user would check by
hand: the records, `stat` of the qcow2 files, `statvfs` of the repository, systemd's
reading of the schedule, and the API's own lists.

The prune counters are checked against prune_runs rows written with plain SQL:
the prune that writes them is engineer B's (the table is the contract).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sendense_tools.hub.schemas import Status
from sendense_tools.hub.sql import ACTIVE
from sendense_tools.policy.calendar import interval
from sendense_tools.policy.model import Policy
from tests.fixtures.promtool import LEGACY, metrics_problems
from tests.fixtures.sshd import TEST_NODE
from tests.fixtures.stack import running_stack, wait_until
from tests.fixtures.vcsim import VcsimLab

from .chains import Vm
from .conftest import MiB, tmpfs

NIGHTLY = Policy(vms=["web01"], schedule="*-*-* 02:00:00", randomized_delay=1800)
WEEKLY = Policy(vms=["db01"], schedule="Sun *-*-* 03:00:00", randomized_delay=600)
ODD = 'odd "vm" \\ with\nnewline Ü'
STATUSES = Status.__args__  # type: ignore[attr-defined]


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Path]:
    """The repository on a tmpfs of its own: statvfs then counts this hub's files only."""
    with tmpfs(tmp_path / "repo-fs", "256m") as where:
        yield where / "repository"


def configure(h, **policies: Policy) -> None:
    """node1's policies as a reload (SIGHUP) of hub.toml would set them."""
    nodes = dict(h.hub.jobs.nodes)
    nodes["node1"] = nodes["node1"].model_copy(update={"policies": policies})
    h.hub.jobs.set_nodes(nodes, h.hub.jobs.node_tokens)


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """Family -> (sorted labels -> value), as prometheus_client reads the text."""
    return {
        f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
        for f in text_string_to_metric_families(text)
    }


async def scrape(h, token: str | None = None) -> tuple[str, dict[str, dict[tuple, float]]]:
    headers = {"Authorization": f"Bearer {token or h.tokens['admin']}"}
    async with h.session.get(h.url + "/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return text, parse(text)


def vm_key(vm: str, policy: str | None = None, node: str = "node1") -> tuple:
    labels = {"node": node, "vm": vm} | ({"policy": policy} if policy is not None else {})
    return tuple(sorted(labels.items()))


def unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def allocated(records: list[dict]) -> int:
    return sum(os.stat(d["qcow2_path"]).st_blocks * 512 for r in records for d in r["disk_results"])


async def listed(h, kind: str, status: str, token: str | None = None) -> int:
    code, body = await h.call("GET", f"/api/v1/{kind}?status={status}&limit=1000", token=token)
    assert code == 200, body
    return len(body)


async def test_each_vm_series_is_what_its_records_and_files_say(make_hub, repository):
    h = await make_hub(ports=4, repository=repository)
    configure(h, nightly=NIGHTLY, weekly=WEEKLY)
    web = Vm(h, "web01", policy="nightly")
    full = await web.backup()
    inc = await web.backup(node_mode="incremental")
    assert (full["status"], inc["status"], inc["parent"]) == ("completed", "completed", full["id"])
    db = await Vm(h, "db01", [8 * MiB], policy="weekly").backup()
    odd = await Vm(h, ODD, [4 * MiB]).backup()
    assert db["status"] == odd["status"] == "completed", (db["error"], odd["error"])
    # A failed backup is no point: new01 has none, so no series of its own.
    h.node.vms["new01"] = [4 * MiB]
    _, failed = await h.call("POST", "/api/v1/backups", {"vm": "new01", "node": "node1"})
    await h.finish(failed["id"], status="failed")
    assert (await h.wait_status(failed["id"]))["status"] == "failed"
    # weekly is gone from this hub's configuration: db01 keeps its label, not an allowance.
    configure(h, nightly=NIGHTLY)

    before = time.time()
    text, m = await scrape(h)
    after = time.time()
    stats = os.statvfs(repository)

    stamps = m["sendense_vm_last_backup_timestamp_seconds"]
    assert stamps == {
        vm_key("web01", "nightly"): unix(inc["finished_at"]),
        vm_key("db01", "weekly"): unix(db["finished_at"]),
        vm_key(ODD, ""): unix(odd["finished_at"]),
    }
    ages = m["sendense_vm_last_backup_age_seconds"]
    assert set(ages) == set(stamps)
    for key, stamp in stamps.items():
        assert before - stamp <= ages[key] <= after - stamp, key
    assert m["sendense_vm_backup_max_age_seconds"] == {
        vm_key("web01", "nightly"): interval(NIGHTLY.schedule) + 1800 + 3600
    }
    assert m["sendense_vm_restore_points"] == {
        vm_key("web01"): 2, vm_key("db01"): 1, vm_key(ODD): 1
    }  # fmt: skip
    assert m["sendense_vm_stored_bytes"] == {
        vm_key("web01"): allocated([full, inc]),
        vm_key("db01"): allocated([db]),
        vm_key(ODD): allocated([odd]),
    }
    # The overlay holds its change only: far less than the full it builds on.
    assert 0 < allocated([inc]) < allocated([full])
    assert m["sendense_repository_size_bytes"] == {(): stats.f_blocks * stats.f_frsize}
    assert m["sendense_repository_used_bytes"] == {
        (): (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    }
    assert m["sendense_repository_free_bytes"] == {(): stats.f_bavail * stats.f_frsize}
    for status in STATUSES:
        for kind in ("backups", "restores"):
            key = (("kind", kind[:-1]), ("status", status))
            assert m["sendense_jobs"][key] == await listed(h, kind, status), key
    assert m["sendense_jobs"][(("kind", "backup"), ("status", "completed"))] == 4

    # The age grows with the clock between two scrapes; the rest stands still.
    await asyncio.sleep(0.2)
    _, again = await scrape(h)
    key = vm_key("web01", "nightly")
    assert again["sendense_vm_last_backup_age_seconds"][key] > ages[key]
    assert again["sendense_vm_last_backup_timestamp_seconds"] == stamps

    assert await asyncio.to_thread(metrics_problems, text) == LEGACY


async def test_a_nodes_token_sees_its_own_vms_and_jobs_only(make_hub):
    h = await make_hub(ports=4, node2_live=True)
    assert (await Vm(h, "web01", [4 * MiB]).backup())["status"] == "completed"
    _, admin = await scrape(h)
    _, own = await scrape(h, h.tokens["node1"])
    _, other = await scrape(h, h.tokens["node2"])
    assert set(admin["sendense_vm_restore_points"]) == {vm_key("web01")}
    assert own["sendense_vm_restore_points"] == admin["sendense_vm_restore_points"]
    assert other["sendense_vm_restore_points"] == {}
    assert other["sendense_vm_stored_bytes"] == {}
    for status in STATUSES:
        for kind in ("backups", "restores"):
            key = (("kind", kind[:-1]), ("status", status))
            assert other["sendense_jobs"][key] == await listed(h, kind, status, h.tokens["node2"])
    assert sum(other["sendense_jobs"].values()) == 0
    assert own["sendense_jobs"][(("kind", "backup"), ("status", "completed"))] == 1


async def test_the_prune_counters_add_up_the_prune_runs(make_hub):
    h = await make_hub(ports=2)
    _, m = await scrape(h)
    assert set(m["sendense_prune_runs"].values()) == {0}
    assert m["sendense_prune_points_removed"] == m["sendense_prune_merged_bytes"] == {(): 0}
    assert m["sendense_prune_last_run_timestamp_seconds"] == {}
    db = sqlite3.connect(h.hub.config.state.db, isolation_level=None)
    try:
        for run_id, dry, status, removed, merged, finished in (
            ("p1", 1, "completed", 2, 4 * MiB, "2026-12-01T05:01:00+00:00"),
            ("p2", 0, "completed", 2, 4 * MiB, "2026-12-01T05:09:30+00:00"),
            ("p3", 0, "failed", 1, MiB, "2026-12-02T05:04:00+00:00"),
            ("p4", 0, "running", 0, 0, None),
        ):
            db.execute(
                "INSERT INTO prune_runs (id, started_at, finished_at, dry_run, status,"
                " points_removed, merged_bytes) VALUES (?, '2026-12-01T05:00:00+00:00', ?, ?, ?,"
                " ?, ?)",
                (run_id, finished, dry, status, removed, merged),
            )
    finally:
        db.close()
    _, m = await scrape(h)
    assert m["sendense_prune_runs"] == {
        (("dry_run", "false"), ("status", "completed")): 1,
        (("dry_run", "false"), ("status", "failed")): 1,
        (("dry_run", "true"), ("status", "completed")): 1,
        (("dry_run", "true"), ("status", "failed")): 0,
    }
    # What the dry run would have removed is not counted.
    assert m["sendense_prune_points_removed"] == {(): 3}
    assert m["sendense_prune_merged_bytes"] == {(): 5 * MiB}
    assert m["sendense_prune_last_run_timestamp_seconds"] == {(): unix("2026-12-02T05:04:00+00:00")}


def test_through_the_whole_stack_a_policys_backup_is_what_the_node_scrapes(
    vcsim: VcsimLab, tmp_path: Path
) -> None:
    lab = {"vms": [vcsim.vm], "schedule": "hourly", "randomized_delay": 0}
    sections = {f"nodes.{TEST_NODE}.policies.lab": lab}
    with running_stack(vcsim, tmp_path, hub_sections=sections) as stack:
        started = stack.api("POST", "/api/v1/backups", {"vm": vcsim.vm, "policy": "lab"})
        path = f"/api/v1/backups/{started['id']}"
        wait_until(
            lambda: stack.api("GET", path)["status"] not in ACTIVE,
            "the backup to end",
            stack.procs,
            timeout=300,
        )
        record = stack.api("GET", path)
        assert record["status"] == "completed", (record["error"], stack.logs())
        # Scraped as the node would: its token, through the tunnel.
        request = urllib.request.Request(
            stack.hub_url + "/metrics",
            headers={"Authorization": f"Bearer {stack.node_token.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            m = parse(resp.read().decode())
    key = vm_key(vcsim.vm, "lab", TEST_NODE)
    assert m["sendense_vm_last_backup_timestamp_seconds"] == {key: unix(record["finished_at"])}
    assert m["sendense_vm_backup_max_age_seconds"] == {key: interval("hourly") + 3600}
    assert m["sendense_vm_restore_points"] == {vm_key(vcsim.vm, node=TEST_NODE): 1}
    stored = m["sendense_vm_stored_bytes"][vm_key(vcsim.vm, node=TEST_NODE)]
    assert stored == allocated([record]) > 0
    assert m["sendense_jobs"][(("kind", "backup"), ("status", "completed"))] == 1
