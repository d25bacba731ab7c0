"""Prune through a real hub: GFS by the policy of each VM's points, merges of points others
build on (real qemu-img), and what must stay untouched."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from .chains import Vm, backing_of, read_point
from .pruning import (
    POLICY,
    assert_points_sound,
    chain_of_three,
    copies,
    merge_leftovers,
    policy_backup,
    prune,
    qcow2s,
    same_as_copies,
    set_policy,
)

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("keep_last", [1, 2])
async def test_pruning_a_chain_merges_the_removed_points_into_the_kept_ones(
    make_hub, tmp_path, keep_last
):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=keep_last)
    vm = Vm(h)
    full, inc1, inc2 = await chain_of_three(vm)
    kept, removed = [inc2, inc1][:keep_last], [inc1, full][keep_last - 1 :]
    taken = copies(kept, tmp_path / "before")
    data = [bytes(d.data) for d in vm.disks]

    code, run = await prune(h)
    assert code == 200, run
    assert (run["status"], run["error"], run["dry_run"]) == ("completed", None, False)
    [entry] = run["vms"]
    assert (entry["vm"], entry["policy"], entry["skipped"]) == ("web01", POLICY, None)
    assert [k["id"] for k in entry["kept"]] == [k["id"] for k in kept]
    assert entry["kept"][0]["reasons"] == ["last", "newest"]
    # Newest first: a run of removed points folds into the kept child above them.
    assert [(r["id"], r["action"], r["into"]) for r in entry["removed"]] == [
        (r["id"], "merge", kept[-1]["id"]) for r in removed
    ]
    assert run["points_removed"] == len(removed)
    assert run["merged_bytes"] == sum(r["bytes"] for r in entry["removed"]) > 0

    same_as_copies(taken)
    for i, q in enumerate(qcow2s(inc2)):
        assert await asyncio.to_thread(read_point, str(q)) == data[i]
    now = [await h.record(k["id"]) for k in kept]
    # The oldest kept point now stands alone (it took the full in); the others still
    # build on the point below them, by the same path.
    assert now[-1]["parent"] is None and now[-1]["mode"] == "incremental"
    for q in qcow2s(now[-1]):
        assert await asyncio.to_thread(backing_of, str(q)) is None
    if keep_last == 2:
        assert now[0]["parent"] == inc1["id"]
        assert [await asyncio.to_thread(backing_of, str(q)) for q in qcow2s(now[0])] == [
            str(q) for q in qcow2s(inc1)
        ]
    for k, before in zip(now, kept, strict=True):
        assert [d["checksum"] for d in k["disk_results"]] == [
            d["checksum"] for d in before["disk_results"]
        ]
    await assert_points_sound(h, now)

    for r in removed:
        code, body = await h.call("GET", f"/api/v1/backups/{r['id']}")
        assert (code, body["error"]) == (404, "backup_not_found"), body
        assert not qcow2s(r)[0].parent.exists()
    assert merge_leftovers(Path(h.hub.config.repository.path)) == []
    row = h.hub.jobs.store.prune_run(run["id"])
    assert (row["status"], row["dry_run"], row["points_removed"]) == ("completed", 0, len(removed))

    # Nothing more to do: a second prune removes nothing and keeps the same points.
    code, again = await prune(h)
    assert code == 200 and again["points_removed"] == 0, again


async def test_a_point_nothing_builds_on_is_deleted_and_the_next_backup_builds_on_the_kept(
    make_hub, tmp_path
):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    vm = Vm(h)
    old = await policy_backup(vm, "full")
    new = await policy_backup(
        vm,
        "full",
    )
    code, record = await h.call("POST", "/api/v1/backups",
                                {"vm": "web01", "node": "node1", "mode": "full"})  # fmt: skip
    assert code == 201
    await vm.copy(record, "full")
    newest = await h.wait_status(record["id"])
    assert newest["policy"] is None

    code, run = await prune(h)
    assert code == 200 and run["status"] == "completed", run
    # The newest point has no policy: the VM is governed by the newest point that has one.
    [entry] = run["vms"]
    assert entry["policy"] == POLICY
    assert [k["id"] for k in entry["kept"]] == [newest["id"]]
    assert {(r["id"], r["action"], r["into"]) for r in entry["removed"]} == {
        (old["id"], "delete", None), (new["id"], "delete", None)
    }  # fmt: skip
    assert all(r["bytes"] > 0 for r in entry["removed"])
    for gone in (old, new):
        assert not qcow2s(gone)[0].parent.exists()
    await assert_points_sound(h, [newest])

    after = await policy_backup(vm, "incremental")
    assert after["parent"] == newest["id"]
    await assert_points_sound(h, [after])


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


async def test_a_dry_run_changes_nothing_and_says_what_a_real_run_would_do(make_hub):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=2)
    vm = Vm(h)
    full, inc1, inc2 = await chain_of_three(vm)
    repo = Path(h.hub.config.repository.path)
    files, records = tree(repo), [await h.record(p["id"]) for p in (full, inc1, inc2)]

    code, run = await prune(h, dry_run=True)
    assert code == 200, run
    assert (run["dry_run"], run["status"], run["points_removed"]) == (True, "completed", 1)
    [entry] = run["vms"]
    [removal] = entry["removed"]
    assert (removal["id"], removal["action"], removal["into"]) == (full["id"], "merge", inc1["id"])
    assert run["merged_bytes"] == removal["bytes"] > 0
    assert tree(repo) == files
    assert [await h.record(p["id"]) for p in (full, inc1, inc2)] == records
    assert h.hub.jobs.store.prune_run(run["id"])["dry_run"] == 1

    code, real = await prune(h)
    assert code == 200 and real["points_removed"] == 1, real
    assert [(r["id"], r["action"], r["into"]) for r in real["vms"][0]["removed"]] == [
        (full["id"], "merge", inc1["id"])
    ]


async def test_a_vm_with_a_running_backup_is_skipped(make_hub):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    vm = Vm(h)
    points = await chain_of_three(vm)
    code, running = await h.call("POST", "/api/v1/backups", {"vm": "web01", "node": "node1"})
    assert code == 201, running

    code, run = await prune(h)
    assert code == 200, run
    assert run["vms"][0]["skipped"] == "a backup is running"
    assert run["vms"][0]["removed"] == [] and run["points_removed"] == 0
    for p in points:
        assert (await h.record(p["id"]))["status"] == "completed"
    code, _ = await h.call("POST", f"/api/v1/backups/{running['id']}/cancel", {})
    assert code == 200


async def test_points_without_a_policy_or_of_a_policy_the_hub_lacks_are_never_pruned(make_hub):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    plain, gone = Vm(h, "plain01"), Vm(h, "gone01")
    for _ in range(2):
        code, record = await h.call("POST", "/api/v1/backups", {"vm": "plain01", "node": "node1"})
        assert code == 201
        await plain.copy(record, "full")
        assert (await h.wait_status(record["id"]))["status"] == "completed"
    set_policy(h, "weekly", vms=("gone01",), keep_last=1)
    for _ in range(2):
        await policy_backup(gone, "full", "weekly")
    # The policy leaves hub.toml (the inventory dropped it): its points stay.
    jobs = h.hub.jobs
    entry = jobs.nodes["node1"]
    policies = {k: v for k, v in entry.policies.items() if k != "weekly"}
    jobs.set_nodes({**jobs.nodes, "node1": entry.model_copy(update={"policies": policies})},
                   jobs.node_tokens)  # fmt: skip

    code, run = await prune(h)
    assert code == 200 and run["points_removed"] == 0, run
    skipped = {v["vm"]: v["skipped"] for v in run["vms"]}
    assert skipped == {"plain01": "no policy",
                       "gone01": "policy weekly is not configured on this hub"}  # fmt: skip
    code, listed = await h.call("GET", "/api/v1/backups?status=completed")
    assert len(listed) == 4


async def test_refusals_name_the_problem(make_hub):
    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    code, body = await prune(h, policy="nosuch")
    assert (code, body["error"]) == (422, "unknown_policy"), body
    assert "nosuch" in body["message"]
    code, body = await prune(h, node="node9")
    assert (code, body["error"]) == (404, "node_not_found"), body
    # A node prunes its own points only.
    code, body = await prune(h, token=h.tokens["node1"], node="node2")
    assert (code, body["error"]) == (403, "forbidden"), body
    code, body = await prune(h, token=h.tokens["node2"], policy=POLICY)
    assert (code, body["error"]) == (422, "unknown_policy"), body
    code, body = await prune(h, token=h.tokens["node1"], policy=POLICY)
    assert code == 200 and body["node"] == "node1", body
    code, body = await prune(h, dry_run="yes please")
    assert (code, body["error"]) == (422, "invalid"), body
    code, body = await prune(h, keep="all")
    assert (code, body["error"]) == (422, "invalid"), body


async def test_a_second_prune_while_one_runs_is_refused(make_hub, monkeypatch):
    from sendense_tools.hub import prune as prune_module

    from .conftest import Gate, wait_for

    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    await chain_of_three(Vm(h))
    gate = Gate()
    monkeypatch.setattr(prune_module, "merge_disks", gate.wrap(prune_module.merge_disks))
    first = asyncio.create_task(prune(h))
    await wait_for(gate.reached, "its first merge")
    code, body = await prune(h, dry_run=True)
    assert (code, body["error"]) == (409, "prune_running"), body
    gate.opened.set()
    code, run = await first
    assert code == 200 and run["points_removed"] == 2, run


async def test_a_point_a_running_restore_reads_is_kept(make_hub):
    from .restoring import restore, scripted_node, wait_restore

    h = await make_hub(ports=4)
    set_policy(h, keep_last=1)
    vm = Vm(h)
    full, inc1, inc2 = await chain_of_three(vm)
    script = scripted_node(h)
    hold = script.hold = asyncio.Event()
    code, started = await restore(h, inc1["id"])
    assert code == 201, started

    code, run = await prune(h)
    assert code == 200, run
    kept = {k["id"]: k["reasons"] for k in run["vms"][0]["kept"]}
    reading = f"in use by restore {started['id']}"
    assert kept == {inc2["id"]: ["last", "newest"], inc1["id"]: [reading],
                    full["id"]: [reading]}  # fmt: skip
    assert run["points_removed"] == 0
    hold.set()
    assert (await wait_restore(h, started["id"]))["status"] == "completed"

    code, run = await prune(h)
    assert code == 200 and run["points_removed"] == 2, run
    await assert_points_sound(h, [await h.record(inc2["id"])])
    assert os.listdir(Path(h.hub.config.repository.path) / "web01") == [inc2["id"]]


async def test_the_cli_shows_the_dry_run_then_prunes_through_the_real_hub(make_hub, tmp_path):
    from tests.fixtures.cli import run_sendense, write_token

    h = await make_hub(ports=4)
    set_policy(h, keep_last=2)
    full, inc1, inc2 = await chain_of_three(Vm(h))
    token = write_token(tmp_path, h.tokens["admin"])
    hub = ("--hub", h.url, "--token-file", token)

    rc, out, err = await run_sendense("backup", "prune", "--dry-run", *hub)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("prune (dry run): 1 points would be removed (1 merged, ")
    assert lines[-1].endswith(" bytes), 2 kept")
    assert f"removed: merged into {inc1['id']}" in out
    assert (await h.record(full["id"]))["status"] == "completed"

    rc, out, err = await run_sendense("backup", "prune", "--policy", POLICY, "--json", *hub)
    assert rc == 0, err
    run = json.loads(out)
    assert [r["id"] for r in run["vms"][0]["removed"]] == [full["id"]]
    await assert_points_sound(h, [await h.record(inc1["id"]), await h.record(inc2["id"])])

    rc, _, err = await run_sendense("backup", "prune", "--policy", "nosuch", *hub)
    assert rc == 2 and "unknown_policy" in err, err
