"""Restores through the node's real API into the simulator, from points served by real
qemu-nbd -r (full and incremental), read back from the datastore and checked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fixtures.recording_hub import RecordingHub
from tests.fixtures.restores import (
    MiB,
    NbdGate,
    Points,
    assert_nothing_left,
    body,
    datastore_read,
    source_hardware,
    vms_called,
)
from tests.fixtures.vcsim import seeded_vcsim


@pytest.fixture
def hardware(vcsim) -> dict[str, Any]:
    return source_hardware(vcsim, ["disk0", "disk1"])


@pytest.fixture
def points(chain, hardware) -> Points:
    return Points(chain, hardware)


async def start(node, request: dict) -> tuple[int, dict]:
    async with node.client() as c, c.post("/api/v1/restore/start", json=request) as resp:
        return resp.status, await resp.json()


async def wait_phase(node, job_id: str, phase: str, within: float = 60) -> dict:
    async with node.client() as c:
        try:
            async with asyncio.timeout(within):
                while True:
                    async with c.get(f"/api/v1/restore/{job_id}") as resp:
                        job = await resp.json()
                    if job["phase"] == phase or job["status"] != "running":
                        break
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"restore {job_id} never reached {phase}: {job}") from None
    assert job["phase"] == phase, f"restore ended before {phase}: {job}"
    return job


async def test_restore_of_a_full_and_an_incremental_is_bit_identical_and_verified(
    vcsim, hub: RecordingHub, make_node, hardware, points
):
    await hub.up()
    node = await make_node(vcsim, hub)
    sources = points.serve()
    request = body("restored-both", hardware, sources, points.disks())
    status, answer = await start(node, request)
    assert (status, answer) == (201, {"job_id": request["job_id"], "status": "running"})

    final = await hub.final(request["job_id"])
    assert final["status"] == "completed", final
    assert final["error"] is None
    expected = {d["disk_id"]: d["checksum"] for d in request["disks"]}
    for d in final["disks"]:
        assert d["verified"] is True
        assert d["checksum"] == expected[d["disk_id"]]
        assert d["bytes_written"] == d["bytes_total"] == points.capacity[d["disk_id"]]
    # Running reports came before, with the phases in order.
    phases = [r["phase"] for r in hub.running(request["job_id"])]
    seen = [p for i, p in enumerate(phases) if p and p not in phases[:i]]
    order = ["connecting", "creating_vm", "writing", "attaching", "verifying"]
    assert seen == [p for p in order if p in seen] and "writing" in seen, phases

    [moref] = vms_called(vcsim, "restored-both")
    assert final["moref"] == moref
    dc, ds = hardware["datacenter"], hardware["datastore"]
    for disk_id, path in points.tops.items():
        flat = f"[{ds}] restored-both/restored-both_{disk_id}-flat.vmdk"
        assert datastore_read(vcsim, dc, flat) == points.chain.read(path), disk_id


async def test_the_new_vm_has_the_recorded_hardware_with_disks_on_their_controllers(
    vcsim, hub, make_node, hardware, points
):
    from sendense_tools.vsphere.hardware import hardware_of
    from sendense_tools.vsphere.inventory import find_vm

    await hub.up()
    node = await make_node(vcsim, hub)
    request = body("restored-hw", hardware, points.serve(), points.disks())
    assert (await start(node, request))[0] == 201
    assert (await hub.final(request["job_id"]))["status"] == "completed"
    session = vcsim.session()
    try:
        got = hardware_of(session, find_vm(session, "restored-hw"))
    finally:
        session.close()
    for key in ("num_cpus", "cores_per_socket", "memory_mb", "guest_id", "firmware"):
        assert got[key] == hardware[key], key
    controllers = {c["key"]: (c["type"], c["bus"]) for c in hardware["controllers"]}
    new_controllers = {c["key"]: (c["type"], c["bus"]) for c in got["controllers"]}
    placed = {d["disk_id"]: (controllers[d["controller_key"]], d["unit"], d["capacity"])
              for d in hardware["disks"]}  # fmt: skip
    new = {d["file"].rsplit("_", 1)[1].removesuffix(".vmdk"):
           (new_controllers[d["controller_key"]], d["unit"], d["capacity"])
           for d in got["disks"]}  # fmt: skip
    assert new == placed


async def test_a_wrong_expected_checksum_fails_and_removes_the_vm_and_its_files(
    vcsim, hub, make_node, hardware, points
):
    await hub.up()
    node = await make_node(vcsim, hub)
    disks = points.disks()
    wrong = dict(disks[1]["checksum"], checksum="0" * 64)
    disks[1] = dict(disks[1], checksum=wrong)
    request = body("restored-wrong", hardware, points.serve(), disks)
    assert (await start(node, request))[0] == 201
    final = await hub.final(request["job_id"])
    assert final["status"] == "failed"
    assert "disk1" in final["error"] and "0" * 64 in final["error"], final["error"]
    assert points.disks()[1]["checksum"]["checksum"] in final["error"]
    verdicts = {d["disk_id"]: d["verified"] for d in final["disks"]}
    assert verdicts == {"disk0": True, "disk1": False}
    assert "disk0" not in final["error"]
    assert_nothing_left(vcsim, "restored-wrong", hardware)


async def test_a_name_that_exists_is_409_and_an_unknown_datastore_422_with_nothing_made(
    vcsim, hub, make_node, hardware, points
):
    await hub.up()
    node = await make_node(vcsim, hub)
    sources = points.serve()
    status, answer = await start(node, body(vcsim.vm, hardware, sources, points.disks()))
    assert status == 409 and answer["error"] == "vm_exists", answer
    assert vcsim.vm in answer["message"]
    request = body("restored-nods", hardware, sources, points.disks(), datastore="NoSuchDS")
    status, answer = await start(node, request)
    assert status == 422 and answer["error"] == "unknown_datastore", answer
    assert "NoSuchDS" in answer["message"]
    request = body("restored-nofolder", hardware, sources, points.disks(), folder="vm/nope")
    status, answer = await start(node, request)
    assert status == 422 and answer["error"] == "unknown_folder", answer
    assert node.restores.jobs == {}
    assert len(vms_called(vcsim, vcsim.vm)) == 1
    assert_nothing_left(vcsim, "restored-nods", hardware)
    assert hub.reports == {}


async def test_sources_outside_the_tunnel_and_mismatched_disks_are_refused(
    vcsim, hub, make_node, hardware, points
):
    node = await make_node(vcsim, hub)
    disks = points.disks()
    far = {"disk0": "nbd://10.1.2.3:10100/x", "disk1": "nbd://127.0.0.1:10101/y"}
    status, answer = await start(node, body("restored-far", hardware, far, disks))
    assert status == 422 and answer["error"] == "nbd_target_refused", answer
    one = {"disk0": "nbd://127.0.0.1:10100/x"}
    status, answer = await start(node, body("restored-one", hardware, one, disks))
    assert status == 400 and answer["error"] == "bad_restore", answer
    assert node.restores.jobs == {}


async def test_the_nbd_source_dropped_mid_restore_resumes_and_completes(
    vcsim, hub, make_node, hardware, points, tmp_path
):
    from tests.fixtures.restores import restore_manager

    await hub.up()
    node = await make_node(vcsim, hub)
    # This node's restores retry for long enough to outlive the cut below.
    node.restores = restore_manager(lambda: vcsim.params(), node.restores.reporter,
                                    tmp_path / "patient", retry_for=60)  # fmt: skip
    sources = points.serve()
    gate = NbdGate(sources["disk0"]).start()
    try:
        gate.hold_after(10 * MiB)
        sources["disk0"] = gate.uri
        request = body("restored-cut", hardware, sources, points.disks())
        job = await node.restores.start(_plan(request))
        await _until(lambda: job.disks["disk0"].bytes_written > 0, "disk0 under way")
        written = job.disks["disk0"].bytes_written
        assert written < points.capacity["disk0"]
        gate.cut()
        await asyncio.sleep(3)
        assert job.status == "running", job.error
        connections = gate.connections
        gate.hold_after(None)
        gate.reopen()
        final = await hub.final(request["job_id"])
        assert final["status"] == "completed", final
        assert gate.connections > connections  # it reconnected
        assert all(d["verified"] for d in final["disks"])
    finally:
        gate.stop()
        await node.restores.shutdown()
    flat = f"[{hardware['datastore']}] restored-cut/restored-cut_disk0-flat.vmdk"
    assert datastore_read(vcsim, hardware["datacenter"], flat) == points.chain.read(points.full)


def _plan(request: dict):
    from sendense_tools.nbd.endpoint import parse_nbd_targets
    from sendense_tools.node.restore_schemas import RestoreStartRequest
    from sendense_tools.node.restores import plan_of

    body = RestoreStartRequest.model_validate(request)
    return plan_of(body, parse_nbd_targets(body.nbd_sources))


async def _until(predicate, what: str, within: float = 60) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - state of this loop's task
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not reached in {within:.0f} s: {what}") from None


DELAYED = "CreateVM_Task=1500,ReconfigVM_Task=1500,PowerOnVM_Task=1500"


@pytest.fixture(scope="module")
def slow_lab():
    with seeded_vcsim("-method-delay", DELAYED) as lab:
        yield lab


@pytest.mark.parametrize("phase", ["creating_vm", "writing", "attaching", "powering_on"])
async def test_a_cancel_in_each_phase_leaves_no_vm_no_file_and_no_nbdkit(
    slow_lab, hub, make_node, chain, phase
):
    await hub.up()
    node = await make_node(slow_lab, hub)
    hardware = source_hardware(slow_lab, ["disk0", "disk1"])
    points = Points(chain, hardware)
    sources = points.serve()
    gate = NbdGate(sources["disk0"]).start()
    try:
        if phase == "writing":
            gate.hold_after(MiB)
        sources["disk0"] = gate.uri
        name = f"restored-cancel-{phase.replace('_', '-')}"
        request = body(name, hardware, sources, points.disks(), power_on=True)
        assert (await start(node, request))[0] == 201
        await wait_phase(node, request["job_id"], phase)
        async with node.client() as c, c.post(f"/api/v1/restore/{request['job_id']}/cancel") as r:
            assert r.status in (200, 202)
        final = await hub.final(request["job_id"])
    finally:
        gate.stop()
    assert final["status"] == "cancelled", final
    assert_nothing_left(slow_lab, name, hardware)


async def test_a_restore_the_hub_ended_stops_and_removes_what_it_made(
    vcsim, hub, make_node, hardware, points
):
    await hub.up()
    node = await make_node(vcsim, hub)
    sources = points.serve()
    gate = NbdGate(sources["disk0"]).start()
    try:
        gate.hold_after(MiB)
        sources["disk0"] = gate.uri
        request = body("restored-ended", hardware, sources, points.disks())
        job_id = request["job_id"]
        assert (await start(node, request))[0] == 201
        await wait_phase(node, job_id, "writing")
        async with node.client() as c, c.get("/healthz") as resp:
            assert (await resp.json())["running_restores"] == 1
        hub.ended.add(job_id)  # its next running report is answered 409
        final = await hub.final(job_id)
    finally:
        gate.stop()
    assert final["status"] == "cancelled", final
    assert final["error"].startswith("the hub ended this restore"), final["error"]
    assert_nothing_left(vcsim, "restored-ended", hardware)
    async with node.client() as c, c.get("/healthz") as resp:
        assert (await resp.json())["running_restores"] == 0
