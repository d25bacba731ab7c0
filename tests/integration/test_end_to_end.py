"""End to end on loopback: a 3-disk VM backed up through the hub and a real
SSH tunnel, and the same through a 10 s hub outage (tests/fixtures/stack.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sendense_tools.nbd.blkhash import checksum_of_digests, image_block_digests
from sendense_tools.nbd.digest import sha256_of_image
from tests.fixtures.ports import port_is_listening
from tests.fixtures.sshd import TEST_NODE
from tests.fixtures.stack import Stack, running_stack, wait_until
from tests.fixtures.vcsim import SnapshotWatch, VcsimLab, remaining_snapshots


def assert_backup_matches(stack: Stack, record: dict, expected: dict[str, str]) -> None:
    assert record["status"] == "completed", (record, stack.logs())
    disks = {d["disk_id"]: d for d in record["disk_results"]}
    assert set(disks) == set(expected)
    for disk_id, sha in expected.items():
        path = Path(disks[disk_id]["qcow2_path"])
        assert path.is_relative_to(stack.repository)
        # Read back from the file itself, not from what anyone reported.
        assert sha256_of_image(str(path)) == sha, disk_id
        # The point's checksum (oVirt imageio's block hash) is that of this content.
        stored = checksum_of_digests(image_block_digests(path, disks[disk_id]["capacity"]))
        assert disks[disk_id]["checksum"] == stored, disk_id


def assert_nothing_left(stack: Stack) -> None:
    m = stack.metrics()
    assert m["allocated"] == 0, m
    assert m["qemu_nbd_processes"] == 0, m
    for port in stack.sshd.slots:
        assert not port_is_listening(port), f"hub port {port} still served"
    assert list((stack.sshd.socket_dir / TEST_NODE).iterdir()) == []


def test_three_disk_vm_through_hub_and_tunnel(vcsim: VcsimLab, tmp_path: Path) -> None:
    with running_stack(vcsim, tmp_path) as stack, SnapshotWatch(vcsim) as watch:
        r = stack.cli(
            "backup", "start", "--hub", stack.hub_url, "--vm", vcsim.vm,
            "--token-file", str(stack.node_token), "--wait", "--json",
        )  # fmt: skip
        assert r.returncode == 0, (r.stderr, stack.logs())
        record = json.loads(r.stdout)
        assert record["node"] == TEST_NODE
        assert_backup_matches(stack, record, vcsim.sha256s)
        assert len(watch.seen) == 1, watch.seen
        assert record["snapshot"] in watch.seen
        assert remaining_snapshots(vcsim) == []
        assert_nothing_left(stack)

        verify = stack.cli(
            "backup", "verify", record["id"], "--hub", stack.hub_url,
            "--token-file", str(stack.admin_token), "--json",
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["ok"] is True


def test_unknown_vm_is_404_and_leaves_nothing(vcsim: VcsimLab, tmp_path: Path) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        r = stack.cli(
            "backup", "start", "--hub", stack.hub_url, "--vm", "no-such-vm",
            "--token-file", str(stack.node_token),
        )  # fmt: skip
        assert r.returncode == 1
        assert "404" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert_nothing_left(stack)


@pytest.fixture(scope="module")
def big_vm(vcsim: VcsimLab) -> dict[str, str]:
    """Re-seed the VM with disks large enough that a copy is still running after
    the outage starts (the https source reads the whole capacity)."""
    return vcsim.reseed([384 << 20, 256 << 20, 320 << 20], seed="outage")


def test_hub_sshd_down_10s_mid_copy_still_bit_identical(
    vcsim: VcsimLab, big_vm: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        started = stack.api("POST", "/api/v1/backups", {"vm": vcsim.vm})
        backup_id = started["id"]

        def copying() -> bool:
            rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            assert rec["status"] in ("pending", "running"), rec
            return any((d.get("bytes_copied") or 0) > 0 for d in rec["disk_results"])

        wait_until(copying, "the copy to start", stack.procs, timeout=120)
        stack.sshd.kill()
        time.sleep(10)
        stack.sshd.start()

        def finished() -> bool:
            try:
                rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            except OSError:  # the tunnel is still reconnecting
                return False
            return rec["status"] not in ("pending", "running")

        wait_until(finished, "the backup to finish", stack.procs, timeout=600)
        record = stack.api("GET", f"/api/v1/backups/{backup_id}")
        assert_backup_matches(stack, record, big_vm)
        assert remaining_snapshots(vcsim) == []
        assert_nothing_left(stack)
        # The outage really hit the copy: the node's NBD connections were refused
        # by the tunnel while the hub was down, and the tunnel came back by itself.
        tunnel_log = next(p for p in stack.procs if p.name == "tunnel").log.read_text()
        assert "event=forward_refused" in tunnel_log
        assert tunnel_log.count("event=connected") >= 2
