"""No node sees another's data: each node against the next one in a ring.

The same checks as tests/infra/test_fleet.py (whose helpers they use), over
every node of the fleet instead of two: node A's token lists only A's backups,
gets 404 for B's backup and 403 for a backup of B's VM; the hub's sshd refuses
A's tunnel user a forward to B's socket path, and the kernel refuses a process
of sdt-A on the hub a connect() into B's socket directory (the control: sdt-B
gets past the directory). The admin token sees every backup.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.fleet.backups import Outcome
from tests.infra.conftest import read_toml, run_ok
from tests.infra.test_fleet import (
    HUB_TOML,
    NODE_TOML,
    TUNNEL_TOML,
    Member,
    _forward_greeting,
    _sshd_denied,
    api,
    greeting,
)

PARALLEL = 4  # checks at once: each is a few podman execs


@dataclass(frozen=True)
class Check:
    name: str
    problem: str  # empty: passed

    @property
    def ok(self) -> bool:
        return not self.problem


def member(host) -> Member:
    conf = read_toml(host, NODE_TOML)
    return Member(host, conf["node"]["id"], conf, read_toml(host, TUNNEL_TOML))


def _records(a: Member, b: Member, ids: dict[str, str], vms: dict[str, str]) -> str:
    base = f"{a.hub_api}/api/v1/backups"
    status, listed = api(a.host, "GET", base, a.token_file)
    if status != 200:
        return f"list: HTTP {status}"
    nodes = {r["node"] for r in listed}
    if nodes != {a.id} or ids[a.id] not in {r["id"] for r in listed}:
        return f"{a.id}'s token lists backups of {sorted(nodes)}"
    status, body = api(a.host, "GET", f"{base}/{ids[b.id]}", a.token_file)
    if status != 404:
        return f"{a.id}'s token read {b.id}'s backup: HTTP {status}"
    status, body = api(a.host, "POST", base, a.token_file, {"vm": vms[b.id], "node": b.id})
    if status != 403:
        return f"{a.id}'s token asked a backup for {b.id}: HTTP {status} {body}"
    return ""


def _sshd(hub, socket: str, a: Member) -> str:
    since = run_ok(hub, "date", "+%s").strip()
    got, _ = _forward_greeting(a, socket)
    if got == "NBDMAGIC":
        return f"{a.id} read {socket}"
    if not _wait(functools.partial(_sshd_denied, hub, socket, since)):
        return f"sshd logged no refusal of {a.id}'s forward to {socket}"
    return ""


def _kernel(hub, socket: str, a: Member, b: Member) -> str:
    got = greeting(hub, socket, f"sdt-{a.id}")
    if not got.startswith("PermissionError"):
        return f"sdt-{a.id} -> {socket}: {got}"
    own = greeting(hub, socket, f"sdt-{b.id}")
    if own.startswith("PermissionError"):
        return f"the control: sdt-{b.id} cannot reach its own directory ({own})"
    return ""


def _wait(check: Callable[[], bool], tries: int = 20) -> bool:
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.5)
    return False


def run(hub, nodes: list, outcomes: list[Outcome]) -> list[Check]:
    """The ring's checks (each node against the next); needs two nodes of one hub."""
    members = [member(h) for h in nodes]
    if len(members) < 2:
        return []
    conf = read_toml(hub, HUB_TOML)
    ids = {o.node.id: o.record.get("id", "") for o in outcomes}
    vms = {o.node.id: o.node.vm for o in outcomes}
    socket_dir = conf.get("nbd", {}).get("socket_dir", "/run/sendense/nbd")
    first_slot = conf.get("nbd", {}).get("port_range", "10100-10200").partition("-")[0]
    pairs = [(a, members[(i + 1) % len(members)]) for i, a in enumerate(members)]
    jobs: list[tuple[str, Callable[[], str]]] = []
    for a, b in pairs:
        socket = f"{socket_dir}/{b.id}/{first_slot}.sock"
        jobs += [
            (f"records {a.id}->{b.id}", functools.partial(_records, a, b, ids, vms)),
            (f"sshd {a.id}->{b.id}", functools.partial(_sshd, hub, socket, a)),
            (f"kernel {a.id}->{b.id}", functools.partial(_kernel, hub, socket, a, b)),
        ]
    jobs.append(("admin sees all", functools.partial(_admin, hub, conf, ids)))
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda job: Check(job[0], _safe(job[1])), jobs))


def _admin(hub, conf: dict, ids: dict[str, str]) -> str:
    url = f"http://{conf['api']['listen']}/api/v1/backups"
    status, listed = api(hub, "GET", url, conf["api"]["token_file"])
    missing = set(ids.values()) - {r["id"] for r in listed} if status == 200 else ids
    return f"the admin token misses {sorted(missing)}" if missing else ""


def _safe(check: Callable[[], str]) -> str:
    try:
        return check()
    except AssertionError as exc:  # run_ok's failure: a command that did not run
        return str(exc).splitlines()[0]
