"""A node holding ten idle connections on each of its own exports (and on every
other slot of its forwards) does not slow or fail another node's backup running
at the same time: the slots, qemu-nbd processes and their --shared limits are
per node. With the old layout (one pool for all nodes) the same connections
would fill B's exports and stall its backup.

Runs after test_fleet.py in the fleet scenario (same seeded VMs: A's held
backup of the first, B's backups of the second).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.infra.conftest import SENDENSE, run_ok
from tests.infra.test_fleet import Fleet, Held, _hold, _release
from tests.infra.test_fleet import fleet as fleet_fixture  # noqa: F401 (used by name)
from tests.infra.test_fleet import seeds as seeds_fixture  # noqa: F401 (used by name)

IDLE_PER_EXPORT = 10
# Opens IDLE_PER_EXPORT connections to each given port of the node's tunnel
# forwards and holds them; after a few seconds writes, per port, how many got
# qemu-nbd's greeting (those hold a --shared place of that export).
IDLE_HOLDER = """
import json, os, socket, sys, time
out, per, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
held = [(p, socket.create_connection(("127.0.0.1", p), timeout=30))
        for p in ports for _ in range(per)]
time.sleep(5)
greeted = {}
for port, s in held:
    try:
        ok = s.recv(8, socket.MSG_DONTWAIT) == b"NBDMAGIC"
    except OSError:
        ok = False
    greeted[port] = greeted.get(port, 0) + ok
with open(out + ".tmp", "w") as f:
    json.dump({"opened": len(held), "greeted": greeted}, f)
os.replace(out + ".tmp", out)
while True:
    time.sleep(60)
"""


def _backup(host, vm: str) -> tuple[dict, float]:
    started = time.monotonic()
    record = json.loads(
        run_ok(host, SENDENSE, "backup", "start", "--vm", vm, "--mode", "full", "--wait", "--json")
    )
    return record, time.monotonic() - started


def _matches_seed(record: dict, seed: dict) -> bool:
    want = {d["disk_id"]: d["sha256"] for d in seed["disks"]}
    return {d["disk_id"]: d["sha256"] for d in record["disk_results"]} == want


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> tuple[Fleet, list[dict]]:
    """test_fleet's fleet and seeds fixtures."""
    return request.getfixturevalue("fleet_fixture"), request.getfixturevalue("seeds_fixture")


@pytest.fixture(scope="module")
def baseline(cluster) -> float:
    """B's backup of the second VM with nothing else running: seconds."""
    fleet, seeds = cluster
    b = fleet.first_two[1]
    record, seconds = _backup(b.host, seeds[1]["vm"])
    assert record["status"] == "completed" and _matches_seed(record, seeds[1]), record
    return seconds


@pytest.fixture(scope="module")
def a_saturated(cluster, baseline) -> Iterator[tuple[dict, list[int]]]:
    """A's backup held running, and ten idle connections on every slot of A's forwards:
    its own exports fill up; with one pool for all nodes (the old layout) B's would too."""
    fleet, seeds = cluster
    a = fleet.first_two[0]
    tag = uuid.uuid4().hex[:8]
    held = Held(a, seeds[0]["vm"], {}, f"sendense-fleet-hold-{tag}", f"/run/sendense-fleet-{tag}")
    idle_unit, count_file = f"sendense-fleet-idle-{tag}", f"/run/sendense-fleet-idle-{tag}"
    try:
        _hold(fleet, held, len(seeds[0]["disks"]))
        own = [int(d["nbd_port"]) for d in held.record["disk_results"]]
        first, last = fleet.slot_range
        run_ok(
            a.host, "systemd-run", f"--unit={idle_unit}", "--collect", "--quiet",
            "-p", "LimitNOFILE=4096",
            "/usr/bin/python3", "-c", IDLE_HOLDER, count_file, str(IDLE_PER_EXPORT),
            *(str(p) for p in range(first, last + 1)),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not a.host.file(count_file).exists:
            assert time.monotonic() < deadline, "A's idle connections were not all opened"
            time.sleep(0.5)
        counts = json.loads(a.host.file(count_file).content_string)
        print(f"{a.id}: {counts['opened']} idle connections, greeted per slot: {counts['greeted']}")
        yield counts, own
    finally:
        a.host.run(f"systemctl stop {idle_unit} 2>/dev/null; rm -f {count_file}; true")
        _release(fleet, held)


def test_idle_connections_on_own_exports_do_not_stall_other_node(cluster, baseline, a_saturated):
    fleet, seeds = cluster
    counts, own = a_saturated
    first, last = fleet.slot_range
    assert counts["opened"] == IDLE_PER_EXPORT * (last - first + 1)
    # A's own exports are full (qemu-nbd --shared); no other slot answered A.
    greeted = {int(p): n for p, n in counts["greeted"].items() if n}
    assert greeted == dict.fromkeys(own, IDLE_PER_EXPORT), counts["greeted"]
    b = fleet.first_two[1]
    record, seconds = _backup(b.host, seeds[1]["vm"])
    print(f"{b.id}'s backup: {baseline:.1f} s alone, {seconds:.1f} s next to A's idle connections")
    assert record["status"] == "completed", record.get("error")
    assert _matches_seed(record, seeds[1]), record["disk_results"]
    # Generous: two cores shared by five containers; a stall would hit ready_timeout (30 s).
    assert seconds < 2 * baseline + 20, (baseline, seconds)
