"""Backup policies on deployed hosts: their timers, a timer that really fires, a real
prune of a chain that every remaining point survives, and the metrics of it.

Only the lab-chain policy's VM (the lab's second VM) is backed up or pruned here:
`make demo` restores the lab VM's first point after this suite, so nothing here
touches that VM's points. The timer is made to fire by a runtime drop-in that
lives for the length of one test; the schedule is restored after it.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime

import pytest

from tests.infra.conftest import (
    MAX_EXPOSURE,
    SENDENSE,
    VENV,
    exposure,
    http_get,
    hub_of,
    read_toml,
    run_ok,
)

NODE_TOML = "/etc/sendense/node.toml"
HUB_TOML = "/etc/sendense/hub.toml"
POLICY = "lab-chain"
# The chain the prune test builds: a full and two incrementals.
POINTS = 3
# Bounded waits (a backup of the small VM takes seconds; a busy machine, minutes).
FIRE_WAIT = 600
# A point's disk as it reads, into one stand-alone qcow2 (qemu-img follows the chain).
FLATTEN = ("qemu-img", "convert", "-f", "qcow2", "-O", "qcow2")
DROPIN = f"/run/systemd/system/sendense-policy-{POLICY}.timer.d/90-infra-fire-now.conf"


def _policies(node) -> dict:
    return read_toml(node, NODE_TOML).get("policies", {})


def _chain_vm(node) -> str:
    policy = _policies(node).get(POLICY)
    if not policy or not policy["vms"]:
        pytest.skip(f"the node has no policy {POLICY} naming a VM (the lab inventory has)")
    return policy["vms"][0]


def _show(host, unit: str, prop: str) -> str:
    return run_ok(host, "systemctl", "show", "--value", "-p", prop, unit).strip()


def _microseconds(host, span: str) -> int:
    """A systemd time span ("1min 30s") in µs, as systemd itself reads it."""
    out = run_ok(host, "systemd-analyze", "timespan", span)
    # "μs:" in a UTF-8 locale, "us:" otherwise.
    line = next(line for line in out.splitlines() if line.strip().startswith(("μs:", "us:")))
    return int(line.split(":", 1)[1])


def _normalized(host, schedule: str) -> str:
    """systemd's normal form of an OnCalendar expression (what `systemctl show` prints)."""
    out = run_ok(host, "systemd-analyze", "calendar", "--", schedule)
    return (
        next(line for line in out.splitlines() if "Normalized form:" in line)
        .split(":", 1)[1]
        .strip()
    )


def _records(hub, vm: str) -> list[dict]:
    data = json.loads(run_ok(hub, SENDENSE, "backup", "list", "--vm", vm, "--json"))
    return data["backups"] if isinstance(data, dict) else data


def _points(hub, vm: str) -> list[dict]:
    """The VM's completed points of the policy, oldest first."""
    done = [r for r in _records(hub, vm) if r["status"] == "completed" and r["policy"] == POLICY]
    return sorted(done, key=lambda r: r["created_at"])


def _wait_inactive(node, unit: str) -> None:
    deadline = time.monotonic() + FIRE_WAIT
    while _show(node, unit, "ActiveState") in ("activating", "active", "deactivating"):
        assert time.monotonic() < deadline, f"{unit} still runs after {FIRE_WAIT} s"
        time.sleep(3)


def test_policy_timers_are_listed_enabled_and_randomized(node):
    policies = _policies(node)
    if not policies:
        pytest.skip("the node has no policies")
    listed = run_ok(node, "systemctl", "list-timers", "--all", "--no-pager", "sendense-*")
    for name, policy in policies.items():
        timer = f"sendense-policy-{name}.timer"
        assert timer in listed, listed
        assert run_ok(node, "systemctl", "is-enabled", timer).strip() == "enabled"
        assert _show(node, timer, "ActiveState") == "active"
        assert _show(node, timer, "Triggers") == f"sendense-policy@{name}.service"
        calendar = _show(node, timer, "TimersCalendar")
        assert f"OnCalendar={_normalized(node, policy['schedule'])} ;" in calendar, calendar
        delay = _show(node, timer, "RandomizedDelayUSec")
        assert _microseconds(node, delay) == policy["randomized_delay"] * 1_000_000, delay


def test_prune_timer_is_listed_enabled_and_randomized(hub):
    listed = run_ok(hub, "systemctl", "list-timers", "--all", "--no-pager", "sendense-*")
    assert "sendense-prune.timer" in listed, listed
    assert run_ok(hub, "systemctl", "is-enabled", "sendense-prune.timer").strip() == "enabled"
    assert _show(hub, "sendense-prune.timer", "Triggers") == "sendense-prune.service"
    assert _microseconds(hub, _show(hub, "sendense-prune.timer", "RandomizedDelayUSec")) > 0


def test_policy_and_prune_services_are_hardened(node, hubs):
    for name in _policies(node):
        assert exposure(node, f"sendense-policy@{name}.service") <= MAX_EXPOSURE
    assert exposure(hub_of(node, hubs), "sendense-prune.service") <= MAX_EXPOSURE


def test_a_policy_timer_fires_and_its_backup_is_recorded_with_the_policy(node, hubs):
    vm = _chain_vm(node)
    hub = hub_of(node, hubs)
    timer = f"sendense-policy-{POLICY}.timer"
    before = {r["id"] for r in _records(hub, vm)}
    at = int(run_ok(node, "date", "-u", "+%s")) + 30
    when = run_ok(node, "date", "-u", "-d", f"@{at}", "+%Y-%m-%d %H:%M:%S").strip()
    dropin = f"[Timer]\nOnCalendar=\nOnCalendar={when} UTC\nRandomizedDelaySec=0\nAccuracySec=1s\n"
    try:
        run_ok(node, "mkdir", "-p", DROPIN.rsplit("/", 1)[0])
        run_ok(node, "sh", "-c", f"printf %s {shlex.quote(dropin)} > {DROPIN}")
        run_ok(node, "systemctl", "daemon-reload")
        run_ok(node, "systemctl", "restart", timer)
        assert _show(node, timer, "NextElapseUSecRealtime"), "the timer has no next elapse"
        deadline = time.monotonic() + FIRE_WAIT
        while not (new := [r for r in _records(hub, vm) if r["id"] not in before]):
            assert time.monotonic() < deadline, f"{timer} did not start a backup of {vm}"
            time.sleep(3)
        _wait_inactive(node, f"sendense-policy@{POLICY}.service")
    finally:
        run_ok(node, "rm", "-rf", DROPIN.rsplit("/", 1)[0])
        run_ok(node, "systemctl", "daemon-reload")
        run_ok(node, "systemctl", "restart", timer)
    assert _show(node, f"sendense-policy@{POLICY}.service", "Result") == "success"
    [record] = [r for r in _records(hub, vm) if r["id"] == new[0]["id"]]
    assert record["policy"] == POLICY
    assert record["status"] == "completed", record.get("error")
    # The schedule is the inventory's again, and only it.
    calendar = _show(node, timer, "TimersCalendar")
    schedule = _normalized(node, _policies(node)[POLICY]["schedule"])
    assert calendar.count("OnCalendar=") == 1 and f"OnCalendar={schedule} ;" in calendar, calendar


def _copy(folder: str, point: dict, disk: dict) -> str:
    return f"{folder}/{point['id']}-{disk['disk_id']}.qcow2"


def test_a_prune_merges_the_chain_and_every_remaining_point_reads_as_before(node, hubs, vcenters):
    vm = _chain_vm(node)
    hub = hub_of(node, hubs)
    if not vcenters:
        pytest.skip("no lab vCenter to change the VM between backups")
    # A chain: the VM changes before each backup, so each point holds a change.
    for n in range(POINTS):
        if len(_points(hub, vm)) >= POINTS:
            break
        run_ok(vcenters[0], f"{VENV}/bin/python", "-m", "sendense_tools.lab", "change",
               "--vcenter", "https://127.0.0.1/sdk", "--vm", vm, "--insecure",
               "--seed", f"infra-policy-{time.time_ns()}-{n}")  # fmt: skip
        run_ok(node, "systemctl", "start", f"sendense-policy@{POLICY}.service")
    points = _points(hub, vm)
    assert len(points) >= POINTS, [p["id"] for p in points]
    keep_last = _policies(node)[POLICY]["keep_last"]
    kept, removed = points[-keep_last:], points[:-keep_last]
    parents = {p["parent"] for p in points}
    copies = run_ok(hub, "mktemp", "-d", "/var/tmp/sendense-infra-prune.XXXXXX").strip()
    try:
        # Each remaining point's disks as they read now, flattened into a copy.
        for point in kept:
            for disk in point["disk_results"]:
                copy = _copy(copies, point, disk)
                run_ok(hub, *FLATTEN, disk["qcow2_path"], copy)

        run = json.loads(run_ok(hub, SENDENSE, "backup", "prune", "--policy", POLICY, "--json"))
        assert run["status"] == "completed", run.get("error")
        assert run["dry_run"] is False
        [mine] = [v for v in run["vms"] if v["vm"] == vm]
        assert mine["skipped"] is None, mine
        assert {r["id"] for r in mine["removed"]} == {p["id"] for p in removed}
        merges = [r for r in mine["removed"] if r["action"] == "merge"]
        assert merges, mine["removed"]  # the full had a child: it was merged, not deleted
        for r in mine["removed"]:
            assert r["action"] == ("merge" if r["id"] in parents else "delete"), r
        assert {k["id"] for k in mine["kept"]} == {p["id"] for p in kept}

        after = {r["id"]: r for r in _records(hub, vm)}
        assert not set(after) & {p["id"] for p in removed}
        for point in removed:
            folder = point["disk_results"][0]["qcow2_path"].rsplit("/", 1)[0]
            assert not hub.file(folder).exists, f"{folder} of pruned point {point['id']} is left"
        for point in kept:
            assert after[point["id"]]["parent"] not in {p["id"] for p in removed}
            verify = json.loads(run_ok(hub, SENDENSE, "backup", "verify", point["id"], "--json"))
            assert verify["ok"], verify
            for disk in point["disk_results"]:
                assert hub.file(disk["qcow2_path"]).exists
                copy = _copy(copies, point, disk)
                compare = hub.run(shlex.join(
                    ["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", copy, disk["qcow2_path"]]
                ))  # fmt: skip
                assert compare.rc == 0, f"{point['id']} {disk['disk_id']}: {compare.stdout}"
                check = hub.run(shlex.join(["qemu-img", "check", disk["qcow2_path"]]))
                assert check.rc == 0, check.stdout
    finally:
        run_ok(hub, "rm", "-rf", copies)


def test_metrics_show_the_policy_vms_last_backup(node, hubs):
    vm = _chain_vm(node)
    hub = hub_of(node, hubs)
    points = _points(hub, vm)
    if not points:
        pytest.skip(f"{vm} has no completed point of {POLICY}")
    api = read_toml(hub, HUB_TOML)["api"]
    status, body = http_get(hub, f"http://{api['listen']}/metrics", api["token_file"])
    assert status == 200, body
    newest = max(points, key=lambda p: p["finished_at"])
    want = datetime.fromisoformat(newest["finished_at"]).timestamp()
    lines = [
        line for line in body.splitlines()
        if line.startswith("sendense_vm_last_backup_timestamp_seconds{") and f'vm="{vm}"' in line
    ]  # fmt: skip
    assert len(lines) == 1, lines or body[:2000]
    assert f'policy="{POLICY}"' in lines[0]
    assert abs(float(lines[0].rsplit(" ", 1)[1]) - want) < 1, (lines[0], newest["finished_at"])
