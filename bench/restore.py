"""Restore against backup: the e2e VM (bench/e2e.py: 3 disks, the whole product on
loopback) backed up in full, then that point restored as a new VM, in turn, in the
same run.

backup:  POST hub /api/v1/backups -> snapshot -> https source -> tunnel -> qemu-nbd qcow2,
         timed from the POST to `completed` (the hub's checksum included).
restore: POST hub /api/v1/backups/{id}/restore -> qemu-nbd -r exports -> tunnel -> node
         creates the VM, PUTs every disk to the datastore, attaches them, reads them back
         and checks each against the point's checksum; timed from the POST to `completed`.
Throughput is the VM's capacity over that time for both, so their ratio is the ratio of
the times. Each restored VM is destroyed before the next round.
"""

from __future__ import annotations

import statistics
import time

from bench.e2e import MIB, SIZES, backup_once
from sendense_tools.lab.vms import destroy_vm
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.vcsim import VM_NAME, VcsimLab, seeded_vcsim

ROUNDS = 2


def restore_once(stack: Stack, backup_id: str, name: str) -> tuple[float, dict]:
    """One restore of `backup_id` as the new VM `name` through the hub API: seconds from
    the POST to `completed`, and the record."""
    start = time.perf_counter()
    record = stack.api("POST", f"/api/v1/backups/{backup_id}/restore", {"name": name})
    while record["status"] in ("pending", "running"):
        time.sleep(0.05)
        record = stack.api("GET", f"/api/v1/restores/{record['id']}")
    if record["status"] != "completed":
        raise RuntimeError(f"restore {record['id']} {record['status']}: {record.get('error')}")
    if not all(d["verified"] for d in record["disks"]):
        raise RuntimeError(f"restore {record['id']} completed with unverified disks")
    return time.perf_counter() - start, record


def destroy(lab: VcsimLab, name: str) -> None:
    session = lab.session()
    try:
        destroy_vm(session, name)
    finally:
        session.close()


def main() -> None:
    with seeded_vcsim(sizes=SIZES, seed="bench-restore", prefix="sendense-bench-restore-") as lab:
        backups: list[float] = []
        restores: list[float] = []
        (lab.workdir / "stack").mkdir()
        with running_stack(lab, lab.workdir / "stack") as stack:
            for i in range(ROUNDS):  # in turn, so drift hits both paths alike
                seconds, point = backup_once(stack, "full")
                backups.append(seconds)
                name = f"{VM_NAME}-restored-{i}"
                restores.append(restore_once(stack, point["id"], name)[0])
                destroy(lab, name)
        total = sum(SIZES)
        mb, mr = statistics.median(backups), statistics.median(restores)
        data = "+".join(f"{s // MIB}" for s in SIZES)
        print(f"VM {VM_NAME}: 3 disks of {data} MiB; restored disks verified by read-back")
        print(f"{'path':<52}{'median s':>9}{'MB/s':>9}  runs")
        for label, med, runs in (
            ("backup (hub API -> snapshot -> copy -> tunnel)", mb, backups),
            ("restore (hub API -> tunnel -> PUT -> read-back)", mr, restores),
        ):
            print(
                f"{label:<52}{med:>9.2f}{total / med / 1e6:>9.1f}  "
                + " ".join(f"{x:.2f}" for x in runs)
            )
        print(f"restore throughput / backup throughput: {mb / mr:.2f}x")


if __name__ == "__main__":
    main()
