"""Incremental forever: a 4 GiB VM backed up in full through the whole product,
1% of it rewritten in scattered 64 KiB writes, then backed up again as an
incremental (CBT -> changed areas only -> a qcow2 overlay on the full).

Printed against the goals of issue "Incremental forever":
- bytes moved by the incremental against the bytes changed (goal: at most the
  changed bytes rounded up to the 64 KiB areas CBT reports);
- the incremental's time against the full's (goal: at most 0.1).
The 10%-allocated full against a full and the checksum's throughput against
SHA-256 are in bench/copy.py and bench/checksum.py.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from bench.e2e import backup_once
from sendense_tools.lab.change import GRAIN, change_vm
from sendense_tools.lab.seed import seed_vm
from sendense_tools.vsphere.connection import (
    VcenterParams,
    VsphereSession,
    fetch_peer_certificate,
    parse_vcenter_url,
    sha1_thumbprint,
)
from tests.fixtures.stack import running_stack
from tests.fixtures.vcsim import VM_NAME, VcsimLab, start_vcsim, stop_vcsim

GIB = 1024**3
SIZES = [2 * GIB, 1 * GIB, 1 * GIB]
CHANGED = 0.01


def one_percent(capacity: int, seed: str) -> list[tuple[int, bytes]]:
    """Scattered 64 KiB writes, 1% of the disk, none overlapping."""
    rng = random.Random(seed)
    grains = capacity // GRAIN
    picked = sorted(rng.sample(range(grains), int(grains * CHANGED)))
    return [(g * GRAIN, rng.randbytes(GRAIN)) for g in picked]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sendense-bench-incr-"))
    proc = None
    try:
        proc, url = start_vcsim(work)
        thumb = sha1_thumbprint(fetch_peer_certificate(parse_vcenter_url(url)))
        session = VsphereSession.connect(VcenterParams(url, "user", "pass", thumbprint=thumb))
        try:
            disks = seed_vm(session, VM_NAME, SIZES, seed="bench-incremental")
        finally:
            session.close()
        lab = VcsimLab(url, "user", "pass", VM_NAME, disks, thumb, work / "cert.pem", work, proc)
        (work / "stack").mkdir()
        with running_stack(lab, work / "stack") as stack:
            full_s, full = backup_once(stack, "full")
            session = lab.session()
            try:
                changed = change_vm(session, VM_NAME, "bench", writes_for=one_percent)
            finally:
                session.close()
            inc_s, inc = backup_once(stack, "incremental")
        changed_bytes = sum(d.changed_bytes for d in changed)
        moved = sum(d["bytes_copied"] for d in inc["disk_results"])
        # The writes are 64 KiB-aligned grains: rounding them up to CBT's areas adds nothing.
        ok_bytes = moved <= changed_bytes
        ratio = inc_s / full_s
        total = sum(SIZES)
        full_moved = sum(d["bytes_copied"] for d in full["disk_results"])
        print(f"VM {VM_NAME}: {len(SIZES)} disks, {total / GIB:.0f} GiB; changed")
        print(f"  {changed_bytes:,} bytes ({changed_bytes / total:.1%}) in 64 KiB writes")
        print(f"full:        {full_s:7.2f} s, moved {full_moved:,} bytes")
        print(f"incremental: {inc_s:7.2f} s, moved {moved:,} bytes (parent {inc['parent']})")
        print(f"bytes moved / bytes changed: {moved / changed_bytes:.2f} "
              f"(goal <= 1.00: {'met' if ok_bytes else 'MISSED'})")  # fmt: skip
        print(f"incremental time / full time: {ratio:.3f} "
              f"(goal <= 0.1: {'met' if ratio <= 0.1 else 'MISSED'})")  # fmt: skip
    finally:
        if proc is not None:
            stop_vcsim(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
