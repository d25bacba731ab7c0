"""The node's start body (mode, changed_since) and its reports (mode, mode_reason, change ids)."""

from __future__ import annotations

from sendense_tools.vsphere.cbt import cbt_enabled
from sendense_tools.vsphere.inventory import find_vm
from tests.fixtures.vcsim import remaining_snapshots
from tests.integration.test_vcsim_cbt import CHANGE_ID_RE, set_cbt


def body(job_id: str, vcsim, made: dict, **extra) -> dict:
    targets = ",".join(f"{k}:{t.uri}" for k, t in made.items())
    return {"job_id": job_id, "vm": vcsim.vm, "nbd_targets": targets, **extra}


async def backed_up(
    vcsim, hub, make_node, qemu_nbd_target, job_id: str, **extra
) -> tuple[dict, dict]:
    """A node backs the simulator's VM up into new targets: (the hub's final report of the
    job, the node's GET of it once ended)."""
    await hub.up()
    node = await make_node(vcsim, hub)
    made = {d.disk_id: qemu_nbd_target(d.capacity, export=d.disk_id) for d in vcsim.disks}
    async with node.client() as client:
        async with client.post(
            "/api/v1/backup/start", json=body(job_id, vcsim, made, **extra)
        ) as r:
            assert r.status == 202, await r.text()
        final = await hub.final(job_id)
        async with client.get(f"/api/v1/backup/{job_id}") as resp:
            job = await resp.json()
    return final, job


def vm_of(vcsim) -> tuple:
    session = vcsim.session()
    return session, find_vm(session, vcsim.vm)


async def test_a_demanded_incremental_on_a_vm_without_cbt_fails_with_the_reason(
    vcsim, hub, make_node, qemu_nbd_target
):
    session, vm = vm_of(vcsim)
    try:
        set_cbt(session, vm, False)
        since = {d.disk_id: "52 aa bb-cc dd/3" for d in vcsim.disks}
        final, job = await backed_up(vcsim, hub, make_node, qemu_nbd_target, "c-refused",
                                     mode="incremental", changed_since=since)  # fmt: skip
        reason = "an incremental backup is not possible: CBT was just enabled"
        assert final["status"] == "failed" and final["error"] == reason
        assert job["status"] == "failed" and job["error"] == reason
        assert remaining_snapshots(vcsim) == []
        # Turned on all the same, so that the next backup can be an incremental.
        assert cbt_enabled(session, vm)
    finally:
        session.close()


async def test_a_full_reports_its_mode_reason_and_each_disks_new_change_id(
    vcsim, hub, make_node, qemu_nbd_target
):
    session, vm = vm_of(vcsim)
    try:
        set_cbt(session, vm, True)
        final, job = await backed_up(vcsim, hub, make_node, qemu_nbd_target, "c-full")
        assert final["status"] == "completed", final
        for report in (final, job):
            assert (report["mode"], report["mode_reason"]) == ("full", "no previous point")
            ids = [d["change_id"] for d in report["disks"]]
            assert all(CHANGE_ID_RE.match(i) for i in ids) and len(set(ids)) == len(ids)
            assert all(d["areas"] is None for d in report["disks"])
        # Decided once the snapshot existed, and reported while copying already.
        running = [r for r in hub.running("c-full") if r["mode"] is not None]
        assert all(r["mode"] == "full" for r in running)
    finally:
        session.close()


async def test_malformed_changed_since_is_422_and_touches_nothing(vcsim, hub, make_node):
    node = await make_node(vcsim, hub)
    targets = "disk0:nbd://127.0.0.1:1/x"
    bad = [
        {"mode": "sometimes"},
        {"changed_since": {"not a disk": "52 aa/1"}},
        {"changed_since": {"disk0": ""}},
        {"changed_since": {"disk0": {"change_id": "52 aa/1", "capacity": -1}}},
        {"changed_since": {"disk0": {"change_id": "52 aa/1", "extra": 1}}},
        {"changed_since": ["disk0"]},
    ]
    async with node.client() as client:
        for n, extra in enumerate(bad):
            start = {"job_id": f"c-bad{n}", "vm": vcsim.vm, "nbd_targets": targets, **extra}
            async with client.post("/api/v1/backup/start", json=start) as resp:
                assert resp.status in (400, 422), (extra, resp.status)
                err = await resp.json()
            assert err["message"] and "\n" not in err["message"], err
    assert remaining_snapshots(vcsim) == []
    assert node.jobs.jobs == {}
