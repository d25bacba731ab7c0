"""End to end: a 3-disk VM backed up through the whole product in the hub's new
layout and in its old one, and the seed's data path for the same disks, all in
the same run (two stacks side by side, rounds in turn).

ours: POST hub /api/v1/backups -> node (simulator, ONE snapshot, https transport
through nbdkit curl, libnbd copy engine, 2 connections per disk) -> our asyncssh
tunnel through a real sshd -> the hub's qemu-nbd exports -> the hub flushes,
stops and re-hashes every qcow2. Timed from the POST to `completed`.
  new layout: the forwards lead to the node's unix sockets, no TLS inside the tunnel;
  old layout: the forwards lead to TCP exports shared by all nodes, per-job TLS-PSK.

reference: the same datastore files through nbdkit curl -> nbdcopy (2
connections per disk, all disks at once) -> OpenSSH `ssh -L` through the same
sshd -> qemu-nbd qcow2 with the hub's options. No snapshot, no hashing: the
reference does less work than we do.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.tunnel import known_hosts_for, openssh_tunnel, process
from sendense_tools.backup.executor import BackupOptions
from sendense_tools.backup.sources import open_source
from sendense_tools.lab.seed import seed_vm
from sendense_tools.vsphere.connection import (
    VcenterParams,
    VsphereSession,
    fetch_peer_certificate,
    parse_vcenter_url,
    sha1_thumbprint,
)
from sendense_tools.vsphere.inventory import VmInfo, describe_vm
from tests.fixtures.ports import port_is_listening
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.vcsim import VM_NAME, VcsimLab, start_vcsim, stop_vcsim

MIB = 1024 * 1024
SIZES = [256 * MIB, 128 * MIB, 192 * MIB]
ROUNDS = 3
REF_BIND = "127.0.0.3"  # the OpenSSH forwards; our tunnel binds 127.0.0.2


def backup_once(stack: Stack, mode: str) -> tuple[float, dict]:
    """One backup of the VM through the hub API: seconds from the POST to `completed`,
    and the record."""
    start = time.perf_counter()
    record = stack.api("POST", "/api/v1/backups", {"vm": VM_NAME, "mode": mode})
    while record["status"] in ("pending", "running"):
        time.sleep(0.05)
        record = stack.api("GET", f"/api/v1/backups/{record['id']}")
    if record["status"] != "completed":
        raise RuntimeError(f"backup {record['id']} {record['status']}: {record.get('error')}")
    return time.perf_counter() - start, record


def start_target(exits: contextlib.ExitStack, path: Path, capacity: int, port: int) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(capacity)], check=True
    )
    exits.callback(path.unlink, missing_ok=True)
    args = [
        "qemu-nbd", "--shared=10", "--persistent", "-b", "127.0.0.1", "-p", str(port),
        "-x", "disk", "-f", "qcow2", "--cache=none", "--aio=io_uring", "--discard=unmap",
        "--detect-zeroes=unmap", str(path),
    ]  # fmt: skip
    qemu = exits.enter_context(process(args, stderr=subprocess.DEVNULL))
    while not port_is_listening(port):
        if qemu.poll() is not None:
            raise RuntimeError("qemu-nbd did not start")
        time.sleep(0.02)


async def copy_all(session: VsphereSession, info: VmInfo, ports: list[int]) -> float:
    async with contextlib.AsyncExitStack() as sources:
        uris = []
        for disk in info.disks:
            # The same https source our backups read (the snapshot is not needed for it).
            cm = await open_source(session, info, None, disk, BackupOptions())  # type: ignore[arg-type]
            uris.append((await sources.enter_async_context(cm)).uri)
        start = time.perf_counter()
        copies = [
            await asyncio.create_subprocess_exec(
                "nbdcopy", "--connections=2", uri, f"nbd://{REF_BIND}:{port}/disk"
            )
            for uri, port in zip(uris, ports, strict=True)
        ]
        codes = [await c.wait() for c in copies]
        seconds = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"nbdcopy failed: {codes}")
    return seconds


def reference_once(lab: VcsimLab, stack: Stack, work: Path) -> float:
    session = VsphereSession.connect(lab.params())
    try:
        info = describe_vm(session, VM_NAME)
        first = stack.sshd.nbd_ports[0]
        ports = list(range(first, first + len(info.disks)))
        with contextlib.ExitStack() as exits:
            for disk, port in zip(info.disks, ports, strict=True):
                start_target(exits, work / f"ref-{disk.disk_id}.qcow2", disk.capacity, port)
            return asyncio.run(copy_all(session, info, ports))
    finally:
        session.close()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sendense-bench-e2e-"))
    proc = None
    try:
        proc, url = start_vcsim(work)
        thumb = sha1_thumbprint(fetch_peer_certificate(parse_vcenter_url(url)))
        session = VsphereSession.connect(VcenterParams(url, "user", "pass", thumbprint=thumb))
        t0 = time.perf_counter()
        disks = seed_vm(session, VM_NAME, SIZES, seed="bench")
        session.close()
        data = "+".join(f"{s // MIB}" for s in SIZES)
        print(f"VM {VM_NAME}: 3 disks of {data} MiB, seeded in {time.perf_counter() - t0:.1f} s")
        lab = VcsimLab(url, "user", "pass", VM_NAME, disks, thumb, work / "cert.pem", work, proc)
        new: list[float] = []
        old: list[float] = []
        ref: list[float] = []
        (work / "new").mkdir()
        (work / "old").mkdir()
        with (
            running_stack(lab, work / "new") as stack_new,
            running_stack(lab, work / "old", listen="tcp", tls_psk=True) as stack_old,
        ):
            # The seed's path needs TCP forwards to the slot ports: the old layout's sshd.
            sshd = stack_old.sshd
            known = known_hosts_for(sshd, sshd.port, work / "known_hosts_ref")
            with openssh_tunnel(sshd, REF_BIND, sshd.port, known):
                for _ in range(ROUNDS):  # in turn, so drift hits every path alike
                    new.append(backup_once(stack_new, "full")[0])
                    old.append(backup_once(stack_old, "full")[0])
                    ref.append(reference_once(lab, stack_old, work))
        mn, mo, mr = (statistics.median(x) for x in (new, old, ref))
        rows = [
            ("sendense, new layout: unix sockets, no TLS in the tunnel", mn, new),
            ("sendense, old layout: TCP exports + TLS-PSK", mo, old),
            ("seed path: nbdkit curl -> nbdcopy -> ssh -L -> qemu-nbd", mr, ref),
        ]
        print(
            f"{'path (hub API -> snapshot -> copy -> tunnel -> verify)':<58}{'median s':>9}  runs"
        )
        for name, med, runs in rows:
            print(f"{name:<58}{med:>9.2f}  " + " ".join(f"{x:.2f}" for x in runs))
        print(f"new layout / old layout: time {mn / mo:.2f}x, throughput {mo / mn:.2f}x")
        print(f"throughput ours (new) / reference: {mr / mn:.2f}x (goal >= 0.9)")
    finally:
        if proc is not None:
            stop_vcsim(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
