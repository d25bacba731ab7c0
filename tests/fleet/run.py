"""One fleet run: containers, rollout (timed), every node backing up at once while the
hub's cgroup is sampled, the isolation ring, a summary, and the teardown."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import testinfra

from tests.fleet import backups, inventory, isolation, podman, rollout
from tests.fleet.inventory import Plan
from tests.fleet.sampler import Sampler, Usage, read_sample

MIB = 1 << 20
SETTLE_SECONDS = 5  # after the rollout, before the idle sample
# The role's own way to read the simulator's certificate (sendense_lab_vcenter).
THUMBPRINT = """
import hashlib, ssl
der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", 443)))
d = hashlib.sha1(der).hexdigest().upper()
print(":".join(d[i:i + 2] for i in range(0, len(d), 2)))
"""
# sshd's re-executed child parses the whole configuration again for every connection:
# its size and the time `sshd -t` takes grow with the nodes (101 PermitOpen paths each).
SSHD_DROPIN = "/etc/ssh/sshd_config.d/50-sendense-tunnel.conf"
SSHD_PARSE = """
import statistics, subprocess, time
def once():
    t = time.monotonic(); subprocess.run(["/usr/sbin/sshd", "-t"], check=True)
    return time.monotonic() - t
print(round(statistics.median(once() for _ in range(5)) * 1000, 1))
"""
VMHWM = "grep VmHWM /proc/$(systemctl show -p MainPID --value sendense-hub.service)/status"


@dataclass(frozen=True)
class Options:
    plan: Plan
    forks: int
    workdir: Path
    keep: bool = False
    reuse: bool = False  # back up and check a fleet a kept run left, without deploying
    batches: list[int | str] | None = None  # rollout.yml's own default when None


@dataclass
class Figures:
    nodes: int
    rollout_seconds: float = 0.0
    batches: list[rollout.Batch] | None = None
    backups_seconds: float = 0.0
    completed: int = 0
    disks: int = 0
    bytes_copied: int = 0
    hub: Usage | None = None
    hub_daemon_hwm_kib: int = 0
    sshd_config_bytes: int = 0
    sshd_parse_ms: float = 0.0
    checks_passed: int = 0
    checks: int = 0


def host(name: str):
    return testinfra.get_host(f"podman://{name}")


def deploy(options: Options, figures: Figures) -> Path:
    """Containers up, the simulator seeded, then the timed rollout; returns the inventory."""
    plan, work = options.plan, options.workdir
    inv_dir = work / "inventory"
    podman.up(plan.containers)
    hosts_yml = inventory.write(plan, inv_dir)
    print(f"fleet: {len(plan.containers)} containers up; seeding the simulator", flush=True)
    rollout.ansible_playbook(
        hosts_yml, ["wheelhouse.yml", "lab-vcenter.yml"], work / "vcenter.log", options.forks
    )
    thumbprint = podman.exec_(inventory.VCENTER, "/usr/bin/python3", "-c", THUMBPRINT).stdout
    inventory.write(plan, inv_dir, thumbprint.strip())
    print(f"fleet: rollout.yml to {plan.hubs} hub(s), {plan.nodes} nodes", flush=True)
    extra = []
    if options.batches:
        extra = ["-e", json.dumps({"sendense_rollout_batches": options.batches})]
    figures.rollout_seconds = rollout.ansible_playbook(
        hosts_yml, ["rollout.yml"], work / "rollout.log", options.forks, *extra
    )
    figures.batches = rollout.batches((work / "rollout.log").read_text(), figures.rollout_seconds)
    return hosts_yml


def measure_sshd(options: Options, figures: Figures) -> None:
    hub = options.plan.hub_names[0]
    figures.sshd_config_bytes = int(podman.exec_(hub, "wc", "-c", SSHD_DROPIN).stdout.split()[0])
    figures.sshd_parse_ms = float(podman.exec_(hub, "/usr/bin/python3", "-c", SSHD_PARSE).stdout)


def back_up(options: Options, figures: Figures) -> list[backups.Outcome]:
    """Every node at once, the (first) hub sampled meanwhile."""
    plan = options.plan
    hub = plan.hub_names[0]
    sampler = Sampler(podman.cgroup_dir(hub, "memory"), podman.cgroup_dir(hub, "cpuacct"))
    time.sleep(SETTLE_SECONDS)
    idle = read_sample(sampler.memory, sampler.cpuacct).rss
    nodes = {n.name: host(n.name) for n in plan.members}
    print(f"fleet: {plan.nodes} backups at once", flush=True)
    sampler.start()
    try:
        outcomes, figures.backups_seconds = backups.back_up_all(
            nodes, plan.members, host(inventory.VCENTER)
        )
    finally:
        figures.hub = sampler.stop(idle)
    hwm = podman.exec_(hub, "sh", "-c", VMHWM, check=False).stdout.split()
    figures.hub_daemon_hwm_kib = int(hwm[1]) if len(hwm) > 1 else 0
    done = [o for o in outcomes if o.ok]
    figures.completed = len(done)
    results = [d for o in done for d in o.record["disk_results"]]
    figures.disks = len(results)
    figures.bytes_copied = sum(d.get("bytes_copied") or 0 for d in results)
    return outcomes


def check_isolation(options: Options, outcomes: list[backups.Outcome]) -> list[isolation.Check]:
    plan = options.plan
    print("fleet: isolation checks (each node against the next)", flush=True)
    checks: list[isolation.Check] = []
    for hub in plan.hub_names:
        mine = [o for o in outcomes if o.node.hub == hub]
        checks += isolation.run(host(hub), [host(o.node.name) for o in mine], mine)
    return checks


def summary(f: Figures, options: Options) -> list[str]:
    """One line per figure a README table row can quote."""
    lines = []
    if f.rollout_seconds:  # not with --reuse
        lines.append(
            f"fleet-scale: rollout.yml of {options.plan.hubs} hub(s) + {f.nodes} nodes: "
            f"{f.rollout_seconds:.0f} s wall "
            f"({f.rollout_seconds / f.nodes:.1f} s per node, forks {options.forks})"
        )
    if f.batches:
        parts = ", ".join(f"{b.hosts} nodes {b.seconds:.0f} s" for b in f.batches)
        lines.append(f"fleet-scale: rollout batches: {parts}")
    lines.append(
        f"fleet-scale: {options.plan.hub_names[0]} sshd tunnel drop-in "
        f"{f.sshd_config_bytes / 1024:.0f} KiB for {f.nodes} nodes, "
        f"`sshd -t` parses its config in {f.sshd_parse_ms:.0f} ms"
    )
    lines.append(
        f"fleet-scale: {f.nodes} backups at once: {f.backups_seconds:.1f} s wall, "
        f"{f.completed}/{f.nodes} completed and equal to their seeds, {f.disks} disks, "
        f"{f.bytes_copied / MIB:.0f} MiB copied"
    )
    if f.hub is not None:
        u, hub = f.hub, options.plan.hub_names[0]
        per_node = (u.peak_rss - u.idle_rss) / max(f.nodes, 1)
        lines += [
            f"fleet-scale: {hub} peak RSS {u.peak_rss / MIB:.0f} MiB "
            f"(idle {u.idle_rss / MIB:.0f} MiB, +{per_node / MIB:.1f} MiB per concurrent node; "
            f"hub daemon VmHWM {f.hub_daemon_hwm_kib / 1024:.0f} MiB; "
            f"page cache peak {u.peak_cache / MIB:.0f} MiB)",
            f"fleet-scale: {hub} CPU during the backups: peak {u.peak_cpu:.2f} cores, "
            f"mean {u.mean_cpu:.2f} cores ({u.samples} samples)",
        ]
    lines.append(f"fleet-scale: isolation checks passed: {f.checks_passed}/{f.checks}")
    return lines


def run(options: Options) -> int:
    """The whole run; 0 when every backup and check passed. Tears down unless options.keep."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    figures = Figures(nodes=options.plan.nodes)
    try:
        if not options.reuse:
            deploy(options, figures)
        measure_sshd(options, figures)
        outcomes = back_up(options, figures)
        for o in outcomes:
            if not o.ok:
                print(f"fleet: backup on {o.node.name} of {o.node.vm}: {o.problem}", flush=True)
        checks = check_isolation(options, outcomes)
        figures.checks = len(checks)
        figures.checks_passed = sum(c.ok for c in checks)
        for c in checks:
            if not c.ok:
                print(f"fleet: isolation check {c.name} FAILED: {c.problem}", flush=True)
        lines = summary(figures, options)
        (options.workdir / "summary.json").write_text(json.dumps(lines, indent=1))
        print("\n".join(lines))
        ok = figures.completed == figures.nodes and checks and figures.checks_passed == len(checks)
        return 0 if ok else 1
    finally:
        if not options.keep:
            removed = podman.down()
            print(f"fleet: removed {len(removed)} containers and network {inventory.NETWORK}")
