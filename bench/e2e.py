"""End to end: VMs backed up through the whole product and through the seed's data path
for the same disks, in the same run (rounds in turn), with where each backup's time went.

ours: POST hub /api/v1/backups -> node (simulator, ONE snapshot, https transport
through nbdkit curl, libnbd copy engine, checksums) -> our asyncssh tunnel through a
real sshd -> the hub's qemu-nbd exports -> the hub's verification of what it stored.
Timed from the POST to `completed`.
  new layout: the forwards lead to the node's unix sockets, no TLS inside the tunnel;
  old layout (the small VM only): TCP exports shared by all nodes, per-job TLS-PSK.

reference (the seed's data path): the same datastore files through plain `nbdkit curl`
(the seed's arguments) -> nbdcopy (--connections=2, all disks at once) -> OpenSSH
`ssh -L` through the same sshd -> qemu-nbd qcow2 with the hub's options. No snapshot,
no hashing, no verification: the reference does less work than we do.

Phases of each of our backups, from the bench's clock and the node's own job record
(polled): hub start (POST -> the node took the job: the hub asks the node for the VM,
allocates slots, creates images, starts qemu-nbd, calls the node), the node's steps
(vCenter login, describe + CBT, snapshot, change query, sources, copy incl. its hash
tail, snapshot removal) and the hub's finalizing (final report -> `completed`: flush,
stop, verification, records). CPU seconds per process tree over each backup too.

Environment: BENCH_E2E_ROUNDS (3), BENCH_E2E_VMS ("small,large").
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.tunnel import known_hosts_for, openssh_tunnel, process
from sendense_tools.lab.seed import seed_vm
from sendense_tools.nbd.curl import nbdkit_curl_args
from sendense_tools.nbd.sources import nbdkit_argv
from sendense_tools.vsphere.connection import (
    VcenterParams,
    VsphereSession,
    fetch_peer_certificate,
    parse_vcenter_url,
    sha1_thumbprint,
)
from sendense_tools.vsphere.datastore import resolve_disk_url
from sendense_tools.vsphere.inventory import describe_vm
from tests.fixtures.ports import port_is_listening
from tests.fixtures.stack import Stack, running_stack
from tests.fixtures.vcsim import VM_NAME, VcsimLab, start_vcsim, stop_vcsim

MIB = 1024 * 1024
REF_BIND = "127.0.0.3"  # the OpenSSH forwards; our tunnel binds 127.0.0.2
POLL = 0.05


@dataclass(frozen=True)
class BenchVm:
    key: str
    name: str
    sizes: list[int]
    old_layout: bool  # also through the old layout (doubles the time: the small VM only)

    @property
    def label(self) -> str:
        sizes = {s // MIB for s in self.sizes}
        if len(sizes) == 1:
            return f"{len(self.sizes)} x {self.sizes[0] // MIB} MiB"
        return "+".join(str(s // MIB) for s in self.sizes) + " MiB"


VMS = [
    BenchVm("small", VM_NAME, [256 * MIB, 128 * MIB, 192 * MIB], True),
    BenchVm("large", "DC0_C0_RP0_VM1", [1024 * MIB] * 3, False),
]
# The node's steps (backup/executor.py Phase) and what the bench calls them.
NODE_PHASES = [
    ("connecting", "vCenter login"),
    ("describing", "describe, leftovers, CBT"),
    ("creating_snapshot", "snapshot + hardware"),
    ("querying_changes", "CBT query"),
    ("starting_sources", "sources (nbdkit curl)"),
    ("copying", "copy + node hash tail"),
    ("removing_snapshot", "snapshot removal"),
]


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class NodeWatch:
    """Polls the node's record of a job: when each step was first seen."""

    def __init__(self, stack: Stack) -> None:
        self._url = stack.node_url
        self._token = stack.node_token.read_text().strip()
        self.job_id: str | None = None
        self.seen: dict[str, float] = {}
        self.record: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            if self.job_id is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                rec = _get(f"{self._url}/api/v1/backup/{self.job_id}", self._token)
                self.record = rec
                now = time.time()
                self.seen.setdefault(rec.get("phase") or rec["status"], now)
                if rec["status"] != "running":
                    return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        if self.job_id is not None:
            self.record = _get(f"{self._url}/api/v1/backup/{self.job_id}", self._token)
        return self.record


def _proc_cpu(pid: int) -> float:
    """CPU seconds of `pid`, plus those of the children it has reaped."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree: every live member's, and what they reaped."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            total += _proc_cpu(p)
    return total


def cpu_roots(stack: Stack, vcsim_pid: int) -> dict[str, int]:
    roots = {p.name: p.proc.pid for p in stack.procs}
    assert stack.sshd.proc is not None
    return {**roots, "sshd": stack.sshd.proc.pid, "vcsim": vcsim_pid}


def sample_cpu(roots: dict[str, int]) -> dict[str, float]:
    return {name: tree_cpu(pid) for name, pid in roots.items()}


@dataclass
class Run:
    seconds: float
    phases: dict[str, float]  # phase label -> seconds
    cpu: dict[str, float]  # process tree -> CPU seconds


def backup_once(stack: Stack, vm: str, roots: dict[str, int]) -> Run:
    """One full backup through the hub API, timed from the POST to `completed`."""
    watch = NodeWatch(stack)
    cpu0 = sample_cpu(roots)
    t0 = time.time()
    start = time.perf_counter()
    try:
        record = stack.api("POST", "/api/v1/backups", {"vm": vm, "mode": "full"})
        t_started = time.time()
        watch.job_id = record["id"]
        while record["status"] in ("pending", "running"):
            time.sleep(POLL)
            record = stack.api("GET", f"/api/v1/backups/{record['id']}")
        seconds = time.perf_counter() - start
        t_end = time.time()
    finally:
        node = watch.stop()
    cpu1 = sample_cpu(roots)
    if record["status"] != "completed":
        raise RuntimeError(f"backup {record['id']} {record['status']}: {record.get('error')}")
    # Each step lasts until the next one seen; the first starts when the node took the job.
    watch.seen["connecting"] = node["started_at"]
    marks = [(label, watch.seen.get(phase)) for phase, label in NODE_PHASES]
    marks = [(label, t) for label, t in marks if t is not None]
    ends = [t for _, t in marks[1:]] + [node["finished_at"]]
    phases = {"hub start (POST -> node took the job)": node["started_at"] - t0}
    phases |= {label: end - t for (label, t), end in zip(marks, ends, strict=True)}
    phases["hub finalizing (report -> completed)"] = t_end - node["finished_at"]
    phases["(node took the job -> POST answered)"] = t_started - node["started_at"]
    cpu = {name: cpu1[name] - cpu0[name] for name in roots}
    return Run(seconds, phases, cpu)


def plain_curl(exits: contextlib.ExitStack, directory: Path, url: str, cookie: str, ca: str) -> str:
    """The seed's source: `nbdkit curl` with the URL, the cookie and the CA, nothing else."""
    directory.mkdir()
    exits.callback(shutil.rmtree, directory, ignore_errors=True)
    (directory / "cookie").write_text(cookie)
    sock, pidfile = directory / "nbd.sock", directory / "nbdkit.pid"
    plugin = nbdkit_curl_args(url, str(directory / "cookie"), ca)
    argv = nbdkit_argv(sock, pidfile, plugin, readonly=True)
    nbdkit = exits.enter_context(process(argv, stderr=subprocess.DEVNULL))
    while not pidfile.exists():
        if nbdkit.poll() is not None:
            raise RuntimeError("nbdkit curl did not start")
        time.sleep(0.02)
    return f"nbd+unix:///?socket={sock}"


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


def copy_all(uris: list[str], ports: list[int]) -> float:
    start = time.perf_counter()
    copies = [
        subprocess.Popen(["nbdcopy", "--connections=2", uri, f"nbd://{REF_BIND}:{port}/disk"])
        for uri, port in zip(uris, ports, strict=True)
    ]
    codes = [c.wait() for c in copies]
    seconds = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"nbdcopy failed: {codes}")
    return seconds


def ref_cpu(roots: dict[str, int]) -> float:
    """CPU seconds of the reference's processes: the simulator, sshd, the `ssh -L`, and
    the bench's children reaped meanwhile (nbdkit, nbdcopy, qemu-nbd, qemu-img)."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(tree_cpu(pid) for pid in roots.values()) + reaped.ru_utime + reaped.ru_stime


def ref_roots(stack: Stack, vcsim_pid: int) -> dict[str, int]:
    assert stack.sshd.proc is not None
    ssh = next(
        p
        for p in _tree(os.getpid())
        if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ssh\0")
    )
    return {"sshd": stack.sshd.proc.pid, "vcsim": vcsim_pid, "ssh": ssh}


def reference_once(lab: VcsimLab, vm: str, stack: Stack, work: Path) -> float:
    session = VsphereSession.connect(lab.params())
    try:
        info = describe_vm(session, vm)
        cookie = session.session_cookie()
        trust, dc = session.trust, info.datacenter
        urls = [resolve_disk_url(trust, dc, d.file, cookie) for d in info.disks]
        first = stack.sshd.nbd_ports[0]
        ports = list(range(first, first + len(info.disks)))
        with contextlib.ExitStack() as exits:
            for disk, port in zip(info.disks, ports, strict=True):
                start_target(exits, work / f"ref-{disk.disk_id}.qcow2", disk.capacity, port)
            uris = [
                plain_curl(exits, work / f"src{i}", u, cookie, str(lab.cert_file))
                for i, u in enumerate(urls)
            ]
            return copy_all(uris, ports)
    finally:
        session.close()


def _med(values: list[float]) -> float:
    return statistics.median(values)


def report(
    vm: BenchVm, new: list[Run], old: list[Run], ref: list[float], ref_cpus: list[float]
) -> None:
    mn, mr = _med([r.seconds for r in new]), _med(ref)
    rows = [("sendense, new layout: unix sockets, no TLS in the tunnel", new)]
    if old:
        rows.append(("sendense, old layout: TCP exports + TLS-PSK", old))
    print(f"-- VM {vm.name}: {vm.label}")
    print(f"{'path (hub API -> snapshot -> copy -> tunnel -> verify)':<58}{'median s':>9}  runs")
    for name, runs in rows:
        times = [r.seconds for r in runs]
        print(f"{name:<58}{_med(times):>9.2f}  " + " ".join(f"{x:.2f}" for x in times))
    name = "seed path: nbdkit curl -> nbdcopy -> ssh -L -> qemu-nbd"
    print(f"{name:<58}{mr:>9.2f}  " + " ".join(f"{x:.2f}" for x in ref))
    print(f"phases of our backups (new layout), median s of {len(new)}:")
    for label in new[0].phases:
        vals = [r.phases.get(label, 0.0) for r in new]
        print(f"  {label:<44}{_med(vals):>7.2f}  " + " ".join(f"{x:.2f}" for x in vals))
    print("CPU s per process tree over one backup (median):")
    print("  " + "  ".join(f"{k} {_med([r.cpu[k] for r in new]):.2f}" for k in new[0].cpu))
    ours_cpu, theirs = _med([sum(r.cpu.values()) for r in new]), _med(ref_cpus)
    print(
        f"{vm.label}: CPU s per backup: ours {ours_cpu:.2f}, seed's data path {theirs:.2f} "
        f"(ours/seed {ours_cpu / theirs:.2f}x; robust to a busy machine, unlike wall time)"
    )
    if old:
        mo = _med([r.seconds for r in old])
        print(f"{vm.label}: new / old layout: time {mn / mo:.2f}x, throughput {mo / mn:.2f}x")
    print(f"{vm.label}: throughput ours (new) / seed's data path: {mr / mn:.2f}x (goal >= 1.1)")


def main() -> None:
    rounds = int(os.environ.get("BENCH_E2E_ROUNDS", "3"))
    chosen = os.environ.get("BENCH_E2E_VMS", "small,large").split(",")
    vms = [v for v in VMS if v.key in chosen]
    work = Path(tempfile.mkdtemp(prefix="sendense-bench-e2e-"))
    proc = None
    try:
        proc, url = start_vcsim(work)
        thumb = sha1_thumbprint(fetch_peer_certificate(parse_vcenter_url(url)))
        session = VsphereSession.connect(VcenterParams(url, "user", "pass", thumbprint=thumb))
        t0 = time.perf_counter()
        seeded = {vm.key: seed_vm(session, vm.name, vm.sizes, seed="bench") for vm in vms}
        session.close()
        print(f"seeded {', '.join(v.label for v in vms)} in {time.perf_counter() - t0:.1f} s")
        first = vms[0]
        lab = VcsimLab(url, "user", "pass", first.name, seeded[first.key], thumb,
                       work / "cert.pem", work, proc)  # fmt: skip
        (work / "new").mkdir()
        (work / "old").mkdir()
        with (
            running_stack(lab, work / "new") as stack_new,
            running_stack(lab, work / "old", listen="tcp", tls_psk=True) as stack_old,
        ):
            # The seed's path needs TCP forwards to the slot ports: the old layout's sshd.
            sshd = stack_old.sshd
            known = known_hosts_for(sshd, sshd.port, work / "known_hosts_ref")
            roots_new = cpu_roots(stack_new, proc.pid)
            roots_old = cpu_roots(stack_old, proc.pid)
            with openssh_tunnel(sshd, REF_BIND, sshd.port, known):
                roots_ref = ref_roots(stack_old, proc.pid)
                for vm in vms:
                    new: list[Run] = []
                    old: list[Run] = []
                    ref: list[float] = []
                    ref_cpus: list[float] = []
                    for _ in range(rounds):  # in turn, so drift hits every path alike
                        new.append(backup_once(stack_new, vm.name, roots_new))
                        if vm.old_layout:
                            old.append(backup_once(stack_old, vm.name, roots_old))
                        cpu0 = ref_cpu(roots_ref)
                        ref.append(reference_once(lab, vm.name, stack_old, work))
                        ref_cpus.append(ref_cpu(roots_ref) - cpu0)
                    report(vm, new, old, ref, ref_cpus)
    finally:
        if proc is not None:
            stop_vcsim(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
