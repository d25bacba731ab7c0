"""testinfra suites for deployed Sendense hosts (the lab, Molecule, or real fleets).

Which hosts play which part:
- SENDENSE_INFRA_HUBS / _NODES / _VCENTERS: comma-separated testinfra host specs
  (Molecule passes `podman://NAME`, the fastest backend);
- otherwise the hosts of `--hosts` (e.g. `--hosts=ansible://all
  --ansible-inventory=inventory/example`), sorted by what is deployed on each:
  /etc/sendense/hub.toml makes a hub, /etc/sendense/node.toml a node,
  /run/vcsim-lab/seed.json a lab vCenter.
"""

from __future__ import annotations

import json
import os
import shlex
from functools import cache

import pytest
import testinfra

VENV = "/opt/sendense/venv"
SENDENSE = f"{VENV}/bin/sendense"
MAX_EXPOSURE = 1.5
ROLE_MARKERS = {
    "hub": "/etc/sendense/hub.toml",
    "node": "/etc/sendense/node.toml",
    "vcenter": "/run/vcsim-lab/seed.json",
}


def _option(config: pytest.Config, name: str) -> str | None:
    try:
        return config.getoption(name)
    except ValueError:
        return None


@cache
def _all_hosts(hosts_opt: str, inventory: str | None) -> tuple:
    specs = [s for s in hosts_opt.split(",") if s]
    return tuple(testinfra.get_hosts(specs, ansible_inventory=inventory))


def hosts_for(config: pytest.Config, role: str) -> list:
    env = os.environ.get(f"SENDENSE_INFRA_{role.upper()}S")
    if env is not None:
        return [testinfra.get_host(s) for s in env.split(",") if s]
    hosts_opt = _option(config, "hosts")
    if not hosts_opt:
        return []
    hosts = _all_hosts(hosts_opt, _option(config, "ansible_inventory"))
    return [h for h in hosts if h.file(ROLE_MARKERS[role]).exists]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for role in ("hub", "node"):
        if role in metafunc.fixturenames:
            hosts = hosts_for(metafunc.config, role)
            metafunc.parametrize(
                role,
                hosts or [pytest.param(None, marks=pytest.mark.skip(reason=f"no {role} hosts"))],
                ids=[str(h.backend.get_pytest_id()) for h in hosts] or None,
            )


@pytest.fixture(scope="session")
def hubs(request: pytest.FixtureRequest) -> list:
    return hosts_for(request.config, "hub")


@pytest.fixture(scope="session")
def vcenters(request: pytest.FixtureRequest) -> list:
    return hosts_for(request.config, "vcenter")


def run_ok(host, *argv: str) -> str:
    """Run argv on host; fail the test with its stderr when it does not exit 0."""
    cmd = host.run(shlex.join(argv))
    assert cmd.rc == 0, f"{argv[0]} on {host.backend.get_pytest_id()} exited {cmd.rc}: {cmd.stderr}"
    return cmd.stdout


def read_toml(host, path: str) -> dict:
    code = "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))"
    return json.loads(run_ok(host, "/usr/bin/python3", "-c", code, path))


def http_get(host, url: str, token_file: str | None = None) -> tuple[int, str]:
    """GET url from inside host (python3 urllib): (status, body)."""
    code = """
import sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Bearer " + open(sys.argv[2]).read().strip())
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""
    out = run_ok(host, "/usr/bin/python3", "-c", code, url, *([token_file] if token_file else []))
    status, _, body = out.partition("\n")
    return int(status), body


def listeners(host) -> list[tuple[str, int, str]]:
    """Listening TCP sockets: (address, port, process name)."""
    result = []
    for line in run_ok(host, "ss", "-Hltnp").splitlines():
        fields = line.split()
        local = fields[3]
        addr, _, port = local.rpartition(":")
        proc = ""
        if "users:((" in line:
            proc = line.split('users:(("', 1)[1].split('"', 1)[0]
        result.append((addr.strip("[]"), int(port), proc))
    return result


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


def exposure(host, unit: str) -> float:
    out = run_ok(host, "systemd-analyze", "security", "--no-pager", unit)
    last = [line for line in out.splitlines() if "Overall exposure level" in line][-1]
    return float(last.split(":", 1)[1].split()[0])


def hub_of(node, hubs: list):
    """The hub host whose hub.toml has this node's table."""
    node_id = read_toml(node, "/etc/sendense/node.toml")["node"]["id"]
    for hub in hubs:
        if node_id in read_toml(hub, "/etc/sendense/hub.toml").get("nodes", {}):
            return hub
    pytest.skip(f"the hub of node {node_id} is not among the tested hosts")


def tunnel_ssh_argv(tunnel: dict, *extra: str) -> list[str]:
    """ssh to the hub as the node's tunnel user, with its key and pinned host key."""
    hub = tunnel["hub"]
    return [
        "timeout", "60", "ssh", "-F", "/dev/null", "-i", hub["key_file"],
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={hub['known_hosts']}", "-o", "ConnectTimeout=20",
        "-p", str(hub["port"]), "-l", hub["user"], *extra, hub["host"],
    ]  # fmt: skip
