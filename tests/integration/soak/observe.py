"""What the soak sees of a running stack from outside: the hub's records and pools
(on its own loopback, so an sshd outage does not blind it), the node's jobs, the
repository, the simulator's snapshots, and every rule a finished job must meet."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from sendense_tools.nbd.digest import sha256_of_image
from sendense_tools.vsphere.inventory import find_vm
from sendense_tools.vsphere.snapshots import SnapshotRef, list_snapshots
from tests.fixtures.faults import nbdkits, qemu_nbds, wait_gone
from tests.fixtures.sshd import TEST_NODE
from tests.fixtures.stack import Stack
from tests.fixtures.vcsim import VcsimLab

ACTIVE = ("pending", "running")


class Observer:
    def __init__(self, stack: Stack, lab: VcsimLab) -> None:
        self.stack = stack
        self.lab = lab

    # -- the hub and node; None while one is restarting -------------------------

    def hub(self, path: str) -> dict | list | None:
        try:
            return self.stack.api("GET", path, direct=True)
        except (OSError, ValueError):
            return None

    def record(self, backup_id: str) -> dict | None:
        found = self.hub(f"/api/v1/backups/{backup_id}")
        return found if isinstance(found, dict) else None

    def ids(self, limit: int = 10000) -> set[str] | None:
        found = self.hub(f"/api/v1/backups?vm={self.lab.vm}&limit={limit}")
        return None if found is None else {r["id"] for r in found}

    def all_ids(self) -> set[str]:
        deadline = time.monotonic() + 60
        while (found := self.ids()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub does not answer\n{self.stack.logs()}")
            time.sleep(0.1)
        return found

    def node_job(self, backup_id: str, method: str = "GET", action: str = "") -> dict | None:
        req = urllib.request.Request(
            f"{self.stack.node_url}/api/v1/backup/{backup_id}{action}",
            method=method,
            headers={"Authorization": f"Bearer {self.stack.node_token.read_text().strip()}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):  # 404 (a restarted node), refused, reset
            return None

    def node_running(self, backup_id: str, within: float) -> bool:
        """Whether the node still runs the job after up to `within` seconds."""
        deadline = time.monotonic() + within
        while (job := self.node_job(backup_id)) and job.get("status") == "running":
            if time.monotonic() > deadline:
                return True
            time.sleep(0.1)
        return False

    def phase(self, backup_id: str | None) -> str:
        """The job's phase as the hub's record shows it (progress comes every second)."""
        rec = self.record(backup_id) if backup_id else None
        if rec is None:
            return "starting" if backup_id is None else "hub unreachable"
        if rec["status"] == "pending":
            return "starting"
        if rec["status"] != "running":
            return f"after the end ({rec['status']})"
        disks = rec["disk_results"]
        done = sum(d["bytes_copied"] for d in disks)
        total = sum(d["capacity"] for d in disks) or 1
        return "finalizing" if done >= total else f"copying {100 * done // total}%"

    # -- what a finished job may leave ----------------------------------------

    def completed(self) -> set[str]:
        found = self.hub("/api/v1/backups?status=completed&limit=10000") or []
        return {r["id"] for r in found}

    def stray_files(self) -> list[Path]:
        # <repository>/<vm>/<backup_id>/...: anything else is no restore point's.
        completed = self.completed()
        repo = self.stack.repository
        files = [p for p in repo.rglob("*") if not p.is_dir()] if repo.exists() else []
        return [
            p
            for p in files
            if len(parts := p.relative_to(repo).parts) < 3 or parts[1] not in completed
        ]

    def key_files(self) -> list[Path]:
        keys = self.stack.key_dir
        return sorted(keys.rglob("*")) if keys.exists() else []

    def snapshots(self) -> list[SnapshotRef]:
        session = self.lab.session()
        try:
            return list_snapshots(session, find_vm(session, self.lab.vm))
        finally:
            session.close()

    def leftovers(self) -> list[str]:
        """Everything a finished job left behind, one line each."""
        found = []
        # Processes on their way out (a SIGTERMed qemu-nbd flushing) get a moment.
        if left := wait_gone(lambda: qemu_nbds(self.stack), 10):
            found.append(f"orphan qemu-nbd: {'; '.join(map(str, left))}")
        if left := wait_gone(lambda: nbdkits(self.lab), 10):
            found.append(f"orphan nbdkit: {'; '.join(map(str, left))}")
        metrics = self.hub("/api/v1/nbd/metrics")
        pool = metrics["nodes"][TEST_NODE] if isinstance(metrics, dict) else None
        if pool is None:
            found.append("the hub did not answer GET /api/v1/nbd/metrics")
        elif (
            pool["available"] != pool["total"] or pool["allocated"] or metrics["qemu_nbd_processes"]
        ):
            found.append(f"slots not all free: {pool}, {metrics['qemu_nbd_processes']} qemu-nbd")
        if allocations := self.hub("/api/v1/nbd/ports"):
            found.append(f"allocations left: {allocations}")
        if sockets := sorted((self.stack.sshd.socket_dir / TEST_NODE).iterdir()):
            found.append(f"stale export sockets: {[s.name for s in sockets]}")
        if stray := self.stray_files():
            found.append(f"files of no completed point: {[str(p) for p in stray]}")
        if keys := self.key_files():
            found.append(f"key files left: {[str(p) for p in keys]}")
        if snaps := self.snapshots():
            found.append(f"snapshots left on the VM: {[s.name for s in snaps]}")
        return found


def differences(rec: dict, expected: dict[str, str]) -> list[str]:
    """How a completed record's images differ from the source disks (read back from
    the files themselves, not from anything the hub or node reported)."""
    disks = {d["disk_id"]: d for d in rec.get("disk_results", [])}
    if set(disks) != set(expected):
        return [f"completed with disks {sorted(disks)}, not {sorted(expected)}"]
    found = []
    for disk_id, sha in expected.items():
        try:
            got = sha256_of_image(Path(disks[disk_id]["qcow2_path"]))
        except Exception as exc:
            found.append(f"completed but {disk_id} unreadable: {exc}")
            continue
        if got != sha:
            found.append(f"completed but {disk_id} differs from the source")
    return found
