"""Isolation between the nodes of one hub, and two nodes backing up at the same time.

Molecule's `fleet` scenario (one hub, three nodes, a lab vCenter with two seeded
VMs) runs these against the live deployment. They are skipped unless the tested
hosts hold at least two nodes of one hub, so the default scenario and
single-node fleets are unaffected. "A" and "B" are two nodes of that hub.

What is proven:
- A's tunnel user cannot listen on B's reverse port (sshd refuses it: permitlisten),
  nor open a forward to it (-W and -L: permitopen), so A cannot reach B's API;
- each node has its own API token; the hub hides B's backups from A's token and
  refuses A's token a backup, a cancel or a progress report for B;
- the hub's exports are unix sockets, <socket_dir>/<node>/<slot>.sock, in a
  directory of the hub user with group sdt-<node>, mode 2750; no TCP listener
  in the slot range;
- sshd refuses A's tunnel user a forward to B's live socket paths (PermitOpen),
  and the kernel refuses a process running as sdt-A on the hub a connect() to
  them (the directory); A's own sockets work through both (the controls);
- A and B back up two VMs at the same time and both match the seed.
"""

from __future__ import annotations

import functools
import json
import posixpath
import shlex
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.infra.conftest import (
    SENDENSE,
    VENV,
    hosts_for,
    listeners,
    read_toml,
    run_ok,
    tunnel_ssh_argv,
)

HUB_TOML = "/etc/sendense/hub.toml"
NODE_TOML = "/etc/sendense/node.toml"
TUNNEL_TOML = "/etc/sendense/tunnel.toml"
SEEDS = "/run/vcsim-lab/seeds"
NO_VM = "sendense-infra-no-such-vm"
# Generous: two cores shared by five containers and other test runs.
WAIT_SECONDS = 120

# POST/GET/PUT from inside a host: prints {"status", "body"}.
API_CALL = """
import json, sys, urllib.error, urllib.request
method, url, token_file, body = sys.argv[1:5]
req = urllib.request.Request(url, data=body.encode() or None, method=method)
if token_file:
    req.add_header("Authorization", "Bearer " + open(token_file).read().strip())
if body:
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(json.dumps({"status": status, "body": text}))
"""

# The first bytes an NBD server sends, whatever it then asks for (TLS or not):
# argv[1] is a TCP port on loopback or a unix socket path. Prints the bytes, or
# the error's class and text.
NBD_GREETING = """
import socket, sys
target = sys.argv[1]
try:
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(target)
    else:
        s = socket.create_connection(("127.0.0.1", int(target)), timeout=30)
except OSError as e:
    print(type(e).__name__, e)
    sys.exit(0)
data = b""
while len(data) < 8:
    chunk = s.recv(8 - len(data))
    if not chunk:
        break
    data += chunk
print(data.decode("latin-1"))
"""

# Holds a backup on a node: SIGSTOPs each nbdkit source once it serves its socket,
# so the copy (or its first read) waits and the hub's exports stay up; the pids
# are appended to a file for the test to SIGCONT them.
HOLD_SOURCES = """
import os, signal, sys, time
want, pid_file, deadline = int(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
held = set()
while len(held) < want and time.monotonic() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in held:
            continue
        try:
            if open(f"/proc/{name}/comm").read().strip() != "nbdkit":
                continue
            argv = open(f"/proc/{name}/cmdline", "rb").read().split(b"\\0")
            sock = argv[argv.index(b"--unix") + 1].decode()
            # nbdkit's own view of the file system (the node's unit has a private /tmp).
            if not os.path.exists(f"/proc/{name}/root{sock}"):
                continue
            os.kill(int(name), signal.SIGSTOP)
        except (OSError, ValueError, IndexError):
            continue
        held.add(int(name))
        with open(pid_file, "a") as f:
            f.write(f"{name}\\n")
    time.sleep(0.01)
"""


@dataclass(frozen=True)
class Member:
    """A node of the fleet's hub."""

    host: Any
    id: str
    conf: dict
    tunnel: dict

    @property
    def name(self) -> str:
        return str(self.host.backend.get_pytest_id())

    @property
    def reverse_port(self) -> int:
        return int(self.tunnel["forwards"]["reverse_port"])

    @property
    def token_file(self) -> str:
        return self.conf["hub"].get("token_file") or self.conf["api"]["token_file"]

    @property
    def hub_api(self) -> str:
        return self.conf["hub"]["api_url"]

    @property
    def api(self) -> str:
        return f"http://{self.conf['api']['listen']}"


@dataclass(frozen=True)
class Fleet:
    hub: Any
    conf: dict
    members: list[Member | None]  # in host order; None: a node of another hub

    def pick(self, *indexes: int) -> list[Member]:
        picked = [self.members[i] if i < len(self.members) else None for i in indexes]
        if any(m is None for m in picked):
            pytest.skip("these nodes are not on one tested hub")
        return picked  # type: ignore[return-value]

    @property
    def first_two(self) -> tuple[Member, Member]:
        on_hub = [m for m in self.members if m is not None]
        return on_hub[0], on_hub[1]

    def node_token_file(self, node_id: str) -> str:
        return self.conf["nodes"][node_id]["token_file"]

    @property
    def socket_dir(self) -> str:
        return self.conf.get("nbd", {}).get("socket_dir", "/run/sendense/nbd")

    @property
    def slot_range(self) -> tuple[int, int]:
        first, _, last = self.conf.get("nbd", {}).get("port_range", "10100-10200").partition("-")
        return int(first), int(last)

    def socket_path(self, node_id: str, slot: int) -> str:
        return posixpath.join(self.socket_dir, node_id, f"{slot}.sock")


@dataclass
class Held:
    """A backup kept running on purpose, with its exports up on the hub."""

    member: Member
    vm: str
    record: dict
    unit: str
    pid_file: str

    @property
    def job_id(self) -> str:
        return self.record["id"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`pair`: every ordered pair (A, B) of distinct nodes, as indexes into the node hosts."""
    if "pair" not in metafunc.fixturenames:
        return
    nodes = hosts_for(metafunc.config, "node")
    names = [str(h.backend.get_pytest_id()) for h in nodes]
    pairs = [(i, j) for i in range(len(nodes)) for j in range(len(nodes)) if i != j]
    if not pairs:
        skip = pytest.mark.skip(reason="the fleet tests need at least two nodes")
        metafunc.parametrize("pair", [pytest.param(None, marks=skip)])
        return
    metafunc.parametrize("pair", pairs, ids=[f"{names[i]}->{names[j]}" for i, j in pairs])


def api(host, method: str, url: str, token_file: str | None = None, body: Any = None):
    """An HTTP call from inside host: (status, parsed JSON body or text)."""
    payload = json.dumps(body) if body is not None else ""
    out = run_ok(host, "/usr/bin/python3", "-c", API_CALL, method, url, token_file or "", payload)
    reply = json.loads(out)
    try:
        return reply["status"], json.loads(reply["body"])
    except ValueError:
        return reply["status"], reply["body"]


def ssh_argv(m: Member, *extra: str) -> list[str]:
    """ssh from node m to its hub as m's tunnel user with m's key and pinned host key."""
    return tunnel_ssh_argv(m.tunnel, *extra)


def sha256_of_file(host, path: str) -> str:
    return run_ok(host, "sha256sum", path).split()[0]


def greeting(host, target: str | int, *as_user: str) -> str:
    """NBD_GREETING from inside host (optionally as another user, with its groups)."""
    argv = ["/usr/bin/python3", "-c", NBD_GREETING, str(target)]
    if as_user:
        user = as_user[0]
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    return run_ok(host, *argv).strip()


def wait_until(what: str, check, seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {seconds:.0f} s")
        time.sleep(0.5)


# -- who is who ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(request: pytest.FixtureRequest, hubs) -> Fleet:
    nodes = hosts_for(request.config, "node")
    if len(nodes) < 2:
        pytest.skip("the fleet tests need at least two nodes")
    confs = [read_toml(n, NODE_TOML) for n in nodes]
    for hub in hubs:
        hub_conf = read_toml(hub, HUB_TOML)
        members = [
            Member(n, c["node"]["id"], c, read_toml(n, TUNNEL_TOML))
            if c["node"]["id"] in hub_conf.get("nodes", {})
            else None
            for n, c in zip(nodes, confs, strict=True)
        ]
        if sum(m is not None for m in members) >= 2:
            return Fleet(hub, hub_conf, members)
    pytest.skip("no tested hub serves two of the tested nodes")


@pytest.fixture(scope="module")
def seeds(vcenters) -> list[dict]:
    """The lab's seeded VMs (name, disks with SHA-256), in name order."""
    if not vcenters:
        pytest.skip("no lab vCenter: nothing seeded to back up")
    code = (
        "import glob, json, sys; files = sorted(glob.glob(sys.argv[1] + '/*.json')); "
        "print(json.dumps([json.load(open(f)) for f in files]))"
    )
    found = json.loads(run_ok(vcenters[0], "/usr/bin/python3", "-c", code, SEEDS))
    if len(found) < 2:
        pytest.skip("the lab vCenter seeded fewer than two VMs")
    return found


# -- tunnel users: listen and open --------------------------------------------


def test_tunnel_user_cannot_listen_on_other_nodes_reverse_port(fleet, pair):
    a, b = fleet.pick(*pair)
    api_port = a.conf["api"]["listen"].rpartition(":")[2]

    def try_listen(port: int):
        argv = ssh_argv(
            a, "-v", "-N", "-o", "ExitOnForwardFailure=yes",
            "-R", f"127.0.0.1:{port}:127.0.0.1:{api_port}",
        )  # fmt: skip
        return a.host.run(shlex.join(argv) + " </dev/null")

    cmd = try_listen(b.reverse_port)
    assert cmd.rc == 255, (cmd.rc, cmd.stderr[-500:])
    assert "remote port forwarding failed" in cmd.stderr, cmd.stderr[-500:]
    # sshd's own refusal (permitlisten), not a port that happens to be taken.
    assert "port forwarding refused" in cmd.stderr, cmd.stderr[-500:]
    # The control: A's own reverse port is permitted (only taken by A's tunnel).
    own = try_listen(a.reverse_port)
    assert own.rc == 255 and "port forwarding refused" not in own.stderr, own.stderr[-500:]


def test_tunnel_user_cannot_open_other_nodes_api(fleet, pair):
    a, b = fleet.pick(*pair)
    request = "GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"

    def through_w(port: int):
        argv = ssh_argv(a, "-W", f"127.0.0.1:{port}")
        # Keep stdin open a moment: an early EOF half-closes the request stream.
        return a.host.run(f"(printf '{request}'; sleep 3) | {shlex.join(argv)}")

    cmd = through_w(b.reverse_port)
    assert cmd.rc != 0 and "HTTP/" not in cmd.stdout, cmd.stdout[:200]
    assert "administratively prohibited" in cmd.stderr, cmd.stderr[-500:]
    # The control: the same user, key and command reach the hub API it may open.
    hub_api_port = int(a.tunnel["forwards"]["api_port"])
    ok = through_w(hub_api_port)
    assert ok.stdout.split(" ", 2)[1:2] == ["200"], (ok.stdout[:200], ok.stderr[-300:])

    # -L: a local listener on A forwarding to B's reverse port; sshd refuses the channel.
    local = run_ok(
        a.host, "/usr/bin/python3", "-c",
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
    ).strip()  # fmt: skip
    ssh = shlex.join(
        ssh_argv(a, "-N", "-o", "ExitOnForwardFailure=yes",
                 "-L", f"127.0.0.1:{local}:127.0.0.1:{b.reverse_port}")
    )  # fmt: skip
    get = shlex.join(
        ["/usr/bin/python3", "-c", API_CALL, "GET", f"http://127.0.0.1:{local}/healthz", "", ""]
    )
    script = f"""
err=$(mktemp); {ssh} </dev/null 2>"$err" & pid=$!
for i in $(seq 100); do ss -Hltn | grep -q '127.0.0.1:{local} ' && break; sleep .2; done
{get} && echo SENDENSE-REACHED; kill $pid; wait $pid; cat "$err" >&2; rm -f "$err"
"""
    lcmd = a.host.run(script)
    assert "SENDENSE-REACHED" not in lcmd.stdout, lcmd.stdout[:300]
    assert "administratively prohibited" in lcmd.stderr, lcmd.stderr[-500:]


def test_reverse_port_serves_only_its_node(fleet, pair):
    """From the hub, B's reverse port is B's API: B's token works there, A's does not."""
    a, b = fleet.pick(*pair)
    base = fleet.conf["nodes"][b.id]["api_url"]
    assert int(base.rsplit(":", 1)[1]) == b.reverse_port
    status, body = api(fleet.hub, "GET", f"{base}/api/v1/vms/{NO_VM}", fleet.node_token_file(b.id))
    assert status == 404 and body["error"] == "vm_not_found", body
    status, _ = api(fleet.hub, "GET", f"{base}/api/v1/vms/{NO_VM}", fleet.node_token_file(a.id))
    assert status == 401


# -- tokens and records -------------------------------------------------------


def test_each_node_has_its_own_token(fleet):
    members = [m for m in fleet.members if m is not None]
    digests = {m.id: sha256_of_file(m.host, m.token_file) for m in members}
    assert len(set(digests.values())) == len(members), "two nodes share an API token"
    admin = sha256_of_file(fleet.hub, fleet.conf["api"]["token_file"])
    assert admin not in digests.values(), "a node holds the hub's admin token"
    for m in members:
        assert sha256_of_file(fleet.hub, fleet.node_token_file(m.id)) == digests[m.id], m.id


@pytest.fixture(scope="module")
def concurrent(fleet, seeds) -> dict[str, dict]:
    """A backs up the first seeded VM while B backs up the second: node id -> record."""
    jobs = list(zip(fleet.first_two, seeds[:2], strict=True))
    with ThreadPoolExecutor(len(jobs)) as pool:
        runs = [
            pool.submit(
                run_ok,
                m.host,
                SENDENSE,
                "backup",
                "start",
                "--vm",
                s["vm"],
                "--mode",
                "full",
                "--wait",
                "--json",
            )
            for m, s in jobs
        ]
        return {m.id: json.loads(r.result()) for (m, _), r in zip(jobs, runs, strict=True)}


def test_two_nodes_back_up_at_the_same_time(fleet, seeds, concurrent):
    code = (
        "import sys; from sendense_tools.nbd.digest import sha256_of_image; "
        "print(' '.join(sha256_of_image(p) for p in sys.argv[1:]))"
    )
    for m, seed in zip(fleet.first_two, seeds, strict=False):
        record = concurrent[m.id]
        assert record["status"] == "completed", (m.id, record.get("error"))
        assert (record["node"], record["vm"]) == (m.id, seed["vm"])
        want = {d["disk_id"]: d["sha256"] for d in seed["disks"]}
        got = {d["disk_id"]: d["sha256"] for d in record["disk_results"]}
        assert got == want, m.id
        # Read back on the hub, independently of the hub's own verification.
        paths = [d["qcow2_path"] for d in record["disk_results"]]
        digests = run_ok(fleet.hub, f"{VENV}/bin/python", "-c", code, *paths).split()
        assert digests == [want[d["disk_id"]] for d in record["disk_results"]], m.id
    first, second = (concurrent[m.id] for m in fleet.first_two)
    assert first["created_at"] < second["finished_at"], "A finished before B started"
    assert second["created_at"] < first["finished_at"], "B finished before A started"


def test_hub_hides_other_nodes_backups(fleet, seeds, concurrent):
    a, b = fleet.first_two
    vms = {a.id: seeds[0]["vm"], b.id: seeds[1]["vm"]}
    for me, other in ((a, b), (b, a)):
        mine, theirs = concurrent[me.id]["id"], concurrent[other.id]["id"]
        base = f"{me.hub_api}/api/v1/backups"
        assert api(me.host, "GET", f"{base}/{mine}", me.token_file)[0] == 200
        status, body = api(me.host, "GET", f"{base}/{theirs}", me.token_file)
        assert status == 404 and body["error"] == "backup_not_found", body
        status, listed = api(me.host, "GET", base, me.token_file)
        assert status == 200
        ids = {r["id"] for r in listed}
        assert mine in ids and theirs not in ids
        assert {r["node"] for r in listed} == {me.id}
        assert api(me.host, "GET", f"{base}?node={other.id}", me.token_file) == (200, [])
        status, body = api(
            me.host, "POST", base, me.token_file, {"vm": vms[other.id], "node": other.id}
        )
        assert status == 403 and body["error"] == "forbidden", body
        for method, path, payload in (
            ("POST", f"{base}/{theirs}/cancel", None),
            ("POST", f"{base}/{theirs}/verify", None),
            ("PUT", f"{base}/{theirs}/progress", {"status": "failed", "error": "x", "disks": []}),
        ):
            status, body = api(me.host, method, path, me.token_file, payload)
            assert status == 404, (method, path, status, body)
    # The control: the admin token sees both.
    for m in (a, b):
        rid = concurrent[m.id]["id"]
        admin = fleet.conf["api"]["token_file"]
        url = f"http://{fleet.conf['api']['listen']}/api/v1/backups/{rid}"
        assert api(fleet.hub, "GET", url, admin)[0] == 200


# -- NBD exports --------------------------------------------------------------


def _hold(fleet: Fleet, held: Held, disks: int) -> None:
    """Start a backup of held.vm from its node and keep it running."""
    m = held.member
    run_ok(
        m.host, "systemd-run", f"--unit={held.unit}", "--collect", "--quiet",
        "/usr/bin/python3", "-c", HOLD_SOURCES, str(disks), held.pid_file, str(WAIT_SECONDS),
    )  # fmt: skip
    base = f"{m.hub_api}/api/v1/backups"
    status, record = api(m.host, "POST", base, m.token_file, {"vm": held.vm})
    assert status == 201, (status, record)
    held.record = record
    wait_until(f"{m.id}'s backup sources to be held", lambda: _held_pids(held))
    status, held.record = api(m.host, "GET", f"{base}/{held.job_id}", m.token_file)
    assert held.record["status"] == "running", held.record


def _held_pids(held: Held) -> list[str]:
    f = held.member.host.file(held.pid_file)
    return f.content_string.split() if f.exists else []


def _release(fleet: Fleet, held: Held) -> None:
    """Cancel through the hub (if still active), resume the sources, wait for the node."""
    m = held.member
    if held.record.get("id"):
        api(m.host, "POST", f"{m.hub_api}/api/v1/backups/{held.job_id}/cancel", m.token_file)
    m.host.run(f"systemctl stop {held.unit} 2>/dev/null; true")
    pids = _held_pids(held)
    if pids:
        m.host.run(f"kill -CONT {' '.join(pids)} 2>/dev/null; true")
    m.host.run(f"rm -f {held.pid_file}")
    if held.record.get("id"):
        url = f"{m.api}/api/v1/backup/{held.job_id}"
        wait_until(
            f"{m.id} to end job {held.job_id}",
            lambda: (
                api(m.host, "GET", url, m.conf["api"]["token_file"])[1].get("status")
                not in ("running", None)
            ),
        )


@pytest.fixture(scope="module")
def held(fleet, seeds, concurrent) -> Iterator[dict[str, Held]]:
    """A backup held running on A and on B (after the concurrent backups: same VMs)."""
    holds: list[Held] = []
    try:
        for m, seed in zip(fleet.first_two, seeds, strict=False):
            tag = uuid.uuid4().hex[:8]
            holds.append(
                Held(m, seed["vm"], {}, f"sendense-fleet-hold-{tag}", f"/run/sendense-fleet-{tag}")
            )
            _hold(fleet, holds[-1], len(seed["disks"]))
        yield {h.member.id: h for h in holds}
    finally:
        for h in holds:
            _release(fleet, h)


def _exports(held: Held) -> list[dict]:
    return held.record["disk_results"]


def _sockets(fleet: Fleet, held: Held) -> list[str]:
    return [fleet.socket_path(held.member.id, d["nbd_port"]) for d in _exports(held)]


def test_exports_are_unix_sockets_no_tcp_listener_in_slot_range(fleet, held):
    first, last = fleet.slot_range
    tcp = [(a, p, proc) for a, p, proc in listeners(fleet.hub) if first <= p <= last]
    assert not tcp, f"TCP listeners in the slot range on the hub: {tcp}"
    hub_user = fleet.hub.file(fleet.conf["state"]["db"]).user
    for h in held.values():
        directory = fleet.hub.file(posixpath.join(fleet.socket_dir, h.member.id))
        assert (directory.user, directory.group) == (hub_user, f"sdt-{h.member.id}")
        assert directory.mode == 0o2750, f"{directory.path} has mode {directory.mode:o}"
        for path in _sockets(fleet, h):
            sock = fleet.hub.file(path)
            assert sock.is_socket, path
            assert sock.group == f"sdt-{h.member.id}", (path, sock.group)
    # Both nodes' pools start at the same slot: the slots are per node.
    slots = [{d["nbd_port"] for d in _exports(h)} for h in held.values()]
    assert all(min(s) == first for s in slots), slots


def _forward_greeting(a: Member, remote: str) -> tuple[str, str]:
    """A forward from node a (as a's tunnel user) to `remote` on the hub: (greeting, ssh stderr)."""
    local = run_ok(
        a.host, "/usr/bin/python3", "-c",
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
    ).strip()  # fmt: skip
    ssh = shlex.join(ssh_argv(a, "-v", "-N", "-L", f"127.0.0.1:{local}:{remote}"))
    probe = shlex.join(["/usr/bin/python3", "-c", NBD_GREETING, local])
    script = f"""
err=$(mktemp); {ssh} </dev/null 2>"$err" & pid=$!
for i in $(seq 100); do ss -Hltn | grep -q '127.0.0.1:{local} ' && break; sleep .2; done
{probe}; sleep 1; kill $pid; wait $pid; cat "$err" >&2; rm -f "$err"
"""
    cmd = a.host.run(script)
    return cmd.stdout.strip(), cmd.stderr


def _sshd_denied(hub, path: str, since: str) -> bool:
    """Whether the hub's sshd logged that its policy denied a channel to `path` (ssh only
    hears "connect failed", whether sshd or the kernel refused it)."""
    line = f"Received request to connect to path {path}, but the request was denied."
    journal = hub.run(f"journalctl --no-pager -o cat -u ssh.service --since @{since}").stdout
    return line in journal


def test_sshd_refuses_other_nodes_socket_paths(fleet, held):
    a, b = fleet.first_two
    for path in _sockets(fleet, held[b.id]):
        since = run_ok(fleet.hub, "date", "+%s").strip()
        got, err = _forward_greeting(a, path)
        assert got != "NBDMAGIC", f"{a.id} read {b.id}'s export {path}"
        assert "open failed" in err, err[-500:]
        denied = functools.partial(_sshd_denied, fleet.hub, path, since)
        wait_until(f"sshd to log its refusal of {path}", denied, 10)
    # The control: the same user, key and forward reach A's own live socket.
    own = _sockets(fleet, held[a.id])[0]
    got, err = _forward_greeting(a, own)
    assert got == "NBDMAGIC", (got, err[-500:])


def test_kernel_refuses_other_nodes_sockets_on_the_hub(fleet, held):
    a, b = fleet.first_two
    for path in _sockets(fleet, held[b.id]):
        got = greeting(fleet.hub, path, f"sdt-{a.id}")
        assert got.startswith("PermissionError"), f"sdt-{a.id} -> {path}: {got}"
    # The controls: sdt-A reaches its own sockets, sdt-B its own.
    for m in (a, b):
        for path in _sockets(fleet, held[m.id]):
            assert greeting(fleet.hub, path, f"sdt-{m.id}") == "NBDMAGIC", path


def test_cancel_ends_held_backup_and_closes_its_exports(fleet, held):
    b = fleet.first_two[1]
    theirs = held[b.id]
    status, record = api(
        b.host, "POST", f"{b.hub_api}/api/v1/backups/{theirs.job_id}/cancel", b.token_file
    )
    assert status == 200 and record["status"] == "cancelled", (status, record)
    admin = fleet.conf["api"]["token_file"]
    status, ports = api(
        fleet.hub, "GET", f"http://{fleet.conf['api']['listen']}/api/v1/nbd/ports", admin
    )
    assert status == 200 and theirs.job_id not in {p["job_id"] for p in ports}
    for path in _sockets(fleet, theirs):
        assert not fleet.hub.file(path).exists, f"{path} left behind"
        assert greeting(fleet.hub, path) != "NBDMAGIC", f"{path} still serves NBD"
