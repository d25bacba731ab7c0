"""The hub: services, loopback-only listeners, tokens, tunnel users, reverse ports, hardening."""

from __future__ import annotations

from tests.fixtures.ssh_audit import audit
from tests.infra.conftest import (
    MAX_EXPOSURE,
    exposure,
    http_get,
    is_loopback,
    listeners,
    read_toml,
    run_ok,
)

HUB_TOML = "/etc/sendense/hub.toml"
NO_VM = "sendense-infra-no-such-vm"


def test_hub_services_enabled_and_running(hub):
    for unit in ("sendense-hub.service", "ssh.service"):
        service = hub.service(unit)
        assert service.is_enabled, f"{unit} is not enabled"
        assert service.is_running, f"{unit} is not running"


def test_sshd_listens_on_22(hub):
    assert any(port == 22 and proc == "sshd" for _, port, proc in listeners(hub))


def test_nothing_public_but_sshd(hub):
    public = [(a, p, proc) for a, p, proc in listeners(hub) if not is_loopback(a)]
    assert public, "sshd should listen on a public address"
    assert all(proc == "sshd" for _, _, proc in public), f"public listeners: {public}"


def test_hub_api_on_loopback_and_healthy(hub):
    conf = read_toml(hub, HUB_TOML)
    host, _, port = conf["api"]["listen"].rpartition(":")
    assert is_loopback(host)
    status, _ = http_get(hub, f"http://{host}:{port}/healthz")
    assert status == 200
    status, _ = http_get(hub, f"http://{host}:{port}/api/v1/backups")
    assert status == 401, "the API must refuse a request without token"
    status, _ = http_get(hub, f"http://{host}:{port}/api/v1/backups", conf["api"]["token_file"])
    assert status == 200


def test_tokens_are_private(hub):
    conf = read_toml(hub, HUB_TOML)
    files = [conf["api"]["token_file"]] + [n["token_file"] for n in conf["nodes"].values()]
    for path in files:
        f = hub.file(path)
        assert f.is_file, path
        assert f.mode == 0o600, f"{path} has mode {f.mode:o}"
        assert f.user == "sendense"


def test_tunnel_users_are_forward_only(hub):
    conf = read_toml(hub, HUB_TOML)
    assert conf["nodes"], "no node is registered on the hub"
    for node_id, node in conf["nodes"].items():
        user = hub.user(f"sdt-{node_id}")
        assert user.exists
        assert user.shell.endswith("nologin")
        shadow = run_ok(hub, "getent", "shadow", user.name).split(":")
        assert shadow[1] == "*", "a tunnel user has no password (not even a locked one)"
        reverse_port = int(node["api_url"].rsplit(":", 1)[1])
        sshd = run_ok(hub, "/usr/sbin/sshd", "-T", "-C", f"user={user.name},host=n,addr=127.0.0.1")
        settings = dict(line.split(" ", 1) for line in sshd.lower().splitlines() if " " in line)
        assert settings["permitlisten"] == f"127.0.0.1:{reverse_port}"
        assert settings["permittty"] == "no"
        # The exports are unix sockets: local streamlocal forwards only, never remote.
        assert settings["allowstreamlocalforwarding"] == "local"
        assert settings["maxsessions"] == "0"
        assert settings["passwordauthentication"] == "no"


def test_each_node_has_its_own_socket_directory(hub):
    """<socket_dir>/<node>: hub user, group sdt-<node>, 2750, declared to systemd-tmpfiles."""
    conf = read_toml(hub, HUB_TOML)
    socket_dir = conf["nbd"]["socket_dir"]
    assert conf["nbd"].get("listen", "unix") == "unix"
    hub_user = hub.file(conf["state"]["db"]).user
    parent = hub.file(socket_dir)
    assert (parent.user, parent.mode) == ("root", 0o755), (parent.user, oct(parent.mode))
    # What systemd-tmpfiles creates at boot, as it resolves it now.
    declared = run_ok(hub, "systemd-tmpfiles", "--cat-config")
    for node_id in conf["nodes"]:
        directory = hub.file(f"{socket_dir}/{node_id}")
        assert directory.is_directory, directory.path
        assert (directory.user, directory.group) == (hub_user, f"sdt-{node_id}")
        assert directory.mode == 0o2750, f"{directory.path} has mode {directory.mode:o}"
        line = f"d {socket_dir}/{node_id} 2750 {hub_user} sdt-{node_id} -"
        assert line in declared.splitlines(), f"no tmpfiles entry {line!r}"
    # The hub may write there despite ProtectSystem=strict.
    rw = run_ok(hub, "systemctl", "show", "-p", "ReadWritePaths", "--value", "sendense-hub.service")
    assert socket_dir in rw.split(), rw


def test_each_node_has_its_own_reverse_port(hub):
    ports = [
        int(n["api_url"].rsplit(":", 1)[1]) for n in read_toml(hub, HUB_TOML)["nodes"].values()
    ]
    assert len(ports) == len(set(ports))


def test_node_api_reachable_through_reverse_port(hub):
    for node_id, node in read_toml(hub, HUB_TOML)["nodes"].items():
        base = node["api_url"]
        status, _ = http_get(hub, f"{base}/healthz")
        assert status == 200, f"node {node_id} API is not reachable through {base}"
        status, body = http_get(hub, f"{base}/api/v1/vms/{NO_VM}", node["token_file"])
        assert status == 404 and "vm_not_found" in body, body
        status, _ = http_get(hub, f"{base}/api/v1/vms/{NO_VM}")
        assert status == 401


def test_sshd_passes_ssh_audit(hub):
    """ssh-audit from the controller against the hub's public port (what a network sees)."""
    address = run_ok(hub, "hostname", "-I").split()[0]
    settings = [line.split() for line in run_ok(hub, "/usr/sbin/sshd", "-T").splitlines()]
    port = int(next(words[1] for words in settings if words[0] == "port"))
    result = audit(address, port)
    print(f"ssh-audit {hub.backend.get_pytest_id()}: {len(result.failures)} failures,"
          f" {len(result.warnings)} warnings, {len(result.notes)} notes")  # fmt: skip
    for finding in result.warnings + result.notes:
        print(f"  {finding}")
    assert result.algorithms["key"] == ("ssh-ed25519",), "a host key the nodes do not pin"
    assert not result.failures, "\n".join(map(str, result.failures))
    assert not result.unexpected_warnings(), "\n".join(map(str, result.unexpected_warnings()))


def test_hub_unit_hardening(hub):
    score = exposure(hub, "sendense-hub.service")
    print(f"exposure sendense-hub.service on {hub.backend.get_pytest_id()}: {score}")
    assert score <= MAX_EXPOSURE


def test_hub_unit_verifies_reloads_and_has_a_watchdog(hub):
    run_ok(hub, "systemd-analyze", "verify", "sendense-hub.service")
    show = dict(
        line.split("=", 1)
        for line in run_ok(
            hub, "systemctl", "show", "-p", "WatchdogUSec", "-p", "ExecReload", "-p", "CanReload",
            "sendense-hub.service",
        ).splitlines()
    )  # fmt: skip
    assert show["CanReload"] == "yes", show
    assert "kill" in show["ExecReload"] and "-HUP" in show["ExecReload"], show
    assert show["WatchdogUSec"] not in ("0", "infinity"), show
