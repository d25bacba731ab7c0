"""The node: key, pinned host key, services, forwards, the tunnel user's limits, hardening."""

from __future__ import annotations

import json
import shlex
import uuid

from tests.infra.conftest import (
    MAX_EXPOSURE,
    SENDENSE,
    exposure,
    http_get,
    hub_of,
    is_loopback,
    listeners,
    read_toml,
    run_ok,
    tunnel_ssh_argv,
)

HUB_TOML = "/etc/sendense/hub.toml"
NODE_TOML = "/etc/sendense/node.toml"
TUNNEL_TOML = "/etc/sendense/tunnel.toml"


def unit_user(host, unit: str) -> str:
    user = run_ok(host, "systemctl", "show", "-p", "User", "--value", unit).strip()
    assert user and user != "root", f"{unit} runs as {user or 'root'}"
    return user


def read_as(host, user: str, path: str):
    """`cat path` as user, with that user's own groups (what the unit's process holds)."""
    argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "cat", path]
    return host.run(shlex.join(argv))


def test_tunnel_key_present_and_private(node):
    key_file = read_toml(node, TUNNEL_TOML)["hub"]["key_file"]
    key = node.file(key_file)
    assert key.is_file
    assert key.mode == 0o600
    assert key.user == unit_user(node, "sendense-tunnel.service")
    assert node.file(f"{key_file}.pub").contains("ssh-ed25519")


def test_tunnel_and_node_run_as_different_users(node):
    tunnel = unit_user(node, "sendense-tunnel.service")
    assert tunnel != unit_user(node, "sendense-node.service")
    # The running process, not only the unit file.
    pid = run_ok(node, "systemctl", "show", "-p", "MainPID", "--value", "sendense-tunnel.service")
    uid = node.file(f"/proc/{pid.strip()}/status").content_string.split("Uid:")[1].split()[0]
    assert int(uid) == node.user(tunnel).uid


def test_tunnel_user_cannot_read_the_node_secrets(node):
    user = unit_user(node, "sendense-tunnel.service")
    conf = read_toml(node, NODE_TOML)
    tunnel = read_toml(node, TUNNEL_TOML)
    # What it needs works as that user (so a refusal below is not a broken command).
    for path in (TUNNEL_TOML, tunnel["hub"]["key_file"], tunnel["hub"]["known_hosts"]):
        assert read_as(node, user, path).rc == 0, f"{user} cannot read {path}"
    secrets = [conf["vcenter"]["password_file"], conf["api"]["token_file"], NODE_TOML]
    for path in secrets:
        assert node.file(path).is_file, path
        cmd = read_as(node, user, path)
        assert cmd.rc != 0 and "Permission denied" in cmd.stderr, f"{user} can read {path}"


def test_hub_host_key_pinned(node, hubs):
    tunnel = read_toml(node, TUNNEL_TOML)
    lines = [
        line
        for line in node.file(tunnel["hub"]["known_hosts"]).content_string.splitlines()
        if line and not line.startswith("#")
    ]
    assert len(lines) == 1, "known_hosts must pin exactly the hub's key"
    hub = hub_of(node, hubs)
    hub_key = hub.file("/etc/ssh/ssh_host_ed25519_key.pub").content_string.split()[:2]
    assert lines[0].split()[1:3] == hub_key


def test_node_services_enabled_and_running(node):
    for unit in ("sendense-node.service", "sendense-tunnel.service"):
        service = node.service(unit)
        assert service.is_enabled, f"{unit} is not enabled"
        assert service.is_running, f"{unit} is not running"


def test_tunnel_connected_with_every_forward(node):
    status = json.loads(run_ok(node, SENDENSE, "tunnel", "status", "--json"))
    assert status["connected"]
    assert status["reverse_up"]
    assert status["forwards_up"] == status["forwards_total"]


def test_forward_ports_listen_on_loopback_only(node):
    fwd = read_toml(node, TUNNEL_TOML)["forwards"]
    first, last = (int(p) for p in str(fwd["nbd_ports"]).split("-"))
    wanted = set(range(first, last + 1)) | {int(fwd["api_port"])}
    socks = listeners(node)
    loopback = {p for a, p, _ in socks if is_loopback(a)}
    assert wanted <= loopback, f"not listening: {sorted(wanted - loopback)}"
    exposed = [(a, p) for a, p, _ in socks if p in wanted and not is_loopback(a)]
    assert not exposed


def test_nothing_public_but_sshd(node):
    public = [(a, p, proc) for a, p, proc in listeners(node) if not is_loopback(a)]
    assert all(proc == "sshd" for _, _, proc in public), f"public listeners: {public}"


def test_hub_api_reachable_through_tunnel(node):
    conf = read_toml(node, NODE_TOML)
    api = conf["hub"]["api_url"]
    token = conf["hub"].get("token_file") or conf["api"]["token_file"]
    assert http_get(node, f"{api}/healthz")[0] == 200
    assert http_get(node, f"{api}/api/v1/backups", token)[0] == 200
    assert http_get(node, f"{api}/api/v1/backups")[0] == 401


def test_nbd_through_tunnel(node, hubs):
    """A throwaway qemu-nbd on the socket of this node's last slot, read through the tunnel."""
    hub = hub_of(node, hubs)
    node_id = read_toml(node, NODE_TOML)["node"]["id"]
    last = int(str(read_toml(node, TUNNEL_TOML)["forwards"]["nbd_ports"]).split("-")[-1])
    socket_dir = read_toml(hub, HUB_TOML).get("nbd", {}).get("socket_dir", "/run/sendense/nbd")
    sock = f"{socket_dir}/{node_id}/{last}.sock"
    unit = f"sendense-infra-nbd-{uuid.uuid4().hex[:8]}"
    image = f"/var/tmp/{unit}.raw"
    run_ok(hub, "sh", "-c", f"head -c 4194304 /dev/urandom > {image} && chmod 644 {image}")
    try:
        want = run_ok(hub, "sha256sum", image).split()[0]
        # As the hub runs its exports: its user, a socket the node's group may connect to.
        hub_user = hub.file(sock.rsplit("/", 1)[0]).user
        run_ok(hub, "systemd-run", f"--unit={unit}", f"--uid={hub_user}", "-p", "UMask=0007",
               "qemu-nbd", "-r", "-k", sock, "-x", "probe", "-f", "raw", "--persistent",
               image)  # fmt: skip
        wait = f"for i in $(seq 50); do test -S {sock} && exit 0; sleep .2; done"
        run_ok(hub, "sh", "-c", f"{wait}; exit 1")
        uri = f"nbd://127.0.0.1:{last}/probe"
        assert run_ok(node, "nbdinfo", "--size", uri).strip() == "4194304"
        got = run_ok(node, "sh", "-c", f"nbdcopy {shlex.quote(uri)} - | sha256sum").split()[0]
        assert got == want
    finally:
        hub.run(f"systemctl stop {unit}; rm -f {image} {sock}")


def test_tunnel_user_gets_no_shell(node):
    tunnel = read_toml(node, TUNNEL_TOML)
    argv = [*tunnel_ssh_argv(tunnel), "echo", "SENDENSE-SHELL-OPEN"]
    cmd = node.run(shlex.join(argv))
    assert cmd.rc != 0
    assert "SENDENSE-SHELL-OPEN" not in cmd.stdout


def test_tunnel_user_allowed_forward_works(node):
    tunnel = read_toml(node, TUNNEL_TOML)
    api_port = tunnel["forwards"]["api_port"]
    argv = tunnel_ssh_argv(tunnel, "-W", f"127.0.0.1:{api_port}")
    request = "GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
    # Keep stdin open a moment: an early EOF half-closes the request stream.
    cmd = node.run(f"(printf '{request}'; sleep 3) | {shlex.join(argv)}")
    assert cmd.stdout.split(" ", 2)[1:2] == ["200"], (cmd.stdout[:200], cmd.stderr)


def test_tunnel_user_denied_other_forward(node):
    tunnel = read_toml(node, TUNNEL_TOML)
    argv = tunnel_ssh_argv(tunnel, "-W", f"127.0.0.1:{tunnel['hub']['port']}")
    cmd = node.run(shlex.join(argv) + " </dev/null")
    assert cmd.rc != 0
    assert "prohibited" in cmd.stderr or "open failed" in cmd.stderr, cmd.stderr


def test_tunnel_user_denied_other_listen(node):
    tunnel = read_toml(node, TUNNEL_TOML)
    other = int(tunnel["forwards"]["reverse_port"]) + 1000
    argv = tunnel_ssh_argv(
        tunnel, "-N", "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{other}:127.0.0.1:8081"
    )
    cmd = node.run(shlex.join(argv))
    assert cmd.rc == 255, (cmd.rc, cmd.stderr)
    assert "forwarding failed" in cmd.stderr, cmd.stderr


def test_node_units_hardening(node):
    for unit in ("sendense-node.service", "sendense-tunnel.service"):
        score = exposure(node, unit)
        print(f"exposure {unit} on {node.backend.get_pytest_id()}: {score}")
        assert score <= MAX_EXPOSURE, f"{unit}: {score}"


def test_node_unit_outwaits_the_snapshot_removal(node):
    """systemd must not kill a stopping node while it removes a backup's snapshot."""
    for unit in ("sendense-node.service", "sendense-tunnel.service"):
        run_ok(node, "systemd-analyze", "verify", unit)
    timeout = read_toml(node, NODE_TOML)["backup"]["snapshot_remove_timeout"]
    out = run_ok(node, "systemctl", "show", "-p", "TimeoutStopUSec", "sendense-node.service")
    stop = out.strip().split("=", 1)[1]
    assert _seconds(stop) > timeout, f"TimeoutStopSec {stop} <= snapshot_remove_timeout {timeout}"


def _seconds(span: str) -> float:
    """systemd's time span text ("11min", "1min 30s", "90s") in seconds."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for part in span.split():
        number = part.rstrip("hmins")
        total += float(number) * units[part[len(number) :]]
    return total
