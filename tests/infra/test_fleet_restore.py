"""Restores across the fleet's nodes (Molecule `fleet`: one hub, several nodes, a lab
vCenter): node B's token cannot restore, see or cancel node A's point or restore,
and node A restores its own point as a new VM, verified, bit for bit the seed.

Skipped, like tests/infra/test_fleet.py, unless the tested hosts hold two nodes of one
hub and a lab vCenter.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator

import pytest

from tests.infra.conftest import SENDENSE, VENV, run_ok
from tests.infra.test_fleet import Fleet, api
from tests.infra.test_fleet import fleet as fleet_fixture  # noqa: F401 (used by name)
from tests.infra.test_fleet import seeds as seeds_fixture  # noqa: F401 (used by name)

LAB = (f"{VENV}/bin/python", "-m", "sendense_tools.lab")
LAB_VCENTER = ("--vcenter", "https://127.0.0.1/sdk", "--insecure")


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest) -> Fleet:
    """test_fleet's fleet fixture."""
    return request.getfixturevalue("fleet_fixture")


@pytest.fixture(scope="module")
def seeds(request: pytest.FixtureRequest) -> list[dict]:
    """test_fleet's seeds fixture."""
    return request.getfixturevalue("seeds_fixture")


@pytest.fixture(scope="module")
def point(fleet: Fleet, seeds) -> dict:
    """A full restore point of the first seeded VM, made by node A."""
    a, _ = fleet.first_two
    out = run_ok(
        a.host, SENDENSE, "backup", "start", "--vm", seeds[0]["vm"], "--mode", "full",
        "--wait", "--json",
    )  # fmt: skip
    record = json.loads(out)
    assert record["status"] == "completed" and record["node"] == a.id, record
    return record


@pytest.fixture(scope="module")
def new_name(vcenters) -> Iterator[str]:
    """A fresh name for the restored VM; the VM is removed again at the end."""
    name = f"sendense-infra-restored-{uuid.uuid4().hex[:8]}"
    yield name
    run_ok(vcenters[0], *LAB, "destroy", *LAB_VCENTER, "--vm", name)


def test_node_b_cannot_restore_node_as_point(fleet, point, new_name):
    _, b = fleet.first_two
    url = f"{b.hub_api}/api/v1/backups/{point['id']}/restore"
    status, body = api(b.host, "POST", url, b.token_file, {"name": new_name})
    assert status == 404 and body["error"] == "backup_not_found", body
    cli = b.host.run(
        shlex.join([SENDENSE, "restore", "start", "--backup", point["id"], "--to", new_name])
    )
    assert cli.rc == 2, (cli.rc, cli.stdout, cli.stderr)
    assert "backup_not_found" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
    status, listed = api(b.host, "GET", f"{b.hub_api}/api/v1/restores", b.token_file)
    assert status == 200
    records = listed["restores"] if isinstance(listed, dict) else listed
    assert all(r["backup_id"] != point["id"] for r in records), records


@pytest.fixture(scope="module")
def restored(fleet, point, new_name) -> dict:
    """Node A restores its point (after B was refused: the name is still free)."""
    a, _ = fleet.first_two
    out = run_ok(
        a.host, SENDENSE, "restore", "start", "--backup", point["id"], "--to", new_name,
        "--wait", "--json",
    )  # fmt: skip
    return json.loads(out)


def test_node_a_restores_its_point_verified_and_bit_for_bit(
    fleet, seeds, point, new_name, restored, vcenters
):
    a, _ = fleet.first_two
    assert restored["status"] == "completed", restored
    assert (restored["node"], restored["backup_id"], restored["name"]) == (
        a.id,
        point["id"],
        new_name,
    )
    recorded = {d["disk_id"]: d["checksum"] for d in point["disk_results"]}
    assert {d["disk_id"] for d in restored["disks"]} == set(recorded)
    for d in restored["disks"]:
        assert d["verified"] is True, d
        assert d["checksum"] == d["expected_checksum"] == recorded[d["disk_id"]], d
    # The new VM's files, read on the vCenter host, are the seeded VM's disks.
    found = json.loads(run_ok(vcenters[0], *LAB, "disks", *LAB_VCENTER, "--vm", new_name, "--json"))
    want = {d["disk_id"]: d["sha256"] for d in seeds[0]["disks"]}
    assert {d["disk_id"]: d["sha256"] for d in found["disks"]} == want


def test_node_b_cannot_see_or_cancel_node_as_restore(fleet, restored):
    a, b = fleet.first_two
    base = f"{b.hub_api}/api/v1/restores"
    status, body = api(b.host, "GET", f"{base}/{restored['id']}", b.token_file)
    assert status == 404, body
    status, body = api(b.host, "POST", f"{base}/{restored['id']}/cancel", b.token_file)
    assert status == 404, body
    status, listed = api(b.host, "GET", base, b.token_file)
    records = listed["restores"] if isinstance(listed, dict) else listed
    assert status == 200 and restored["id"] not in {r["id"] for r in records}
    # The controls: A sees its own restore, the admin token sees it too.
    status, mine = api(a.host, "GET", f"{a.hub_api}/api/v1/restores/{restored['id']}", a.token_file)
    assert status == 200 and mine["status"] == "completed", mine
    admin = fleet.conf["api"]["token_file"]
    url = f"http://{fleet.conf['api']['listen']}/api/v1/restores/{restored['id']}"
    assert api(fleet.hub, "GET", url, admin)[0] == 200
