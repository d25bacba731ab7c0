"""The whole product on loopback: hub, node and tunnel as real processes, a real
sshd with the forward-only policy, the vCenter simulator and qemu-nbd.

The node side of the tunnel binds 127.0.0.2, so every byte the node writes to
the hub's exports crosses the SSH connection (the hub's qemu-nbd listens on
127.0.0.1 only).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sendense_tools.lab.seed import seed_vm
from sendense_tools.nbd.digest import sha256_of_image
from sendense_tools.vsphere.connection import VcenterParams, VsphereSession
from tests.fixtures.ports import free_port, port_is_listening
from tests.fixtures.procs import stop_process
from tests.fixtures.sshd import Sshd, running_sshd, write_toml
from tests.fixtures.vcsim import SnapshotWatch, VcsimLab, remaining_snapshots

NODE_HOST = "127.0.0.2"


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def start(base: Path, name: str, *args: str) -> Proc:
    log = base / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sendense_tools", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Proc(name, proc, log)


def wait_until(check, what: str, procs: list[Proc], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{p.name} exited: {p.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log.read_text()[-1500:]}" for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


@dataclass
class Stack:
    base: Path
    sshd: Sshd
    hub_url: str  # the hub API as the node sees it: through the tunnel
    node_token: Path
    admin_token: Path
    repository: Path
    procs: list[Proc]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sendense_tools", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"{self.hub_url}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.node_token.read_text().strip()}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def metrics(self) -> dict:
        return self.api("GET", "/api/v1/nbd/metrics")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text()[-3000:]}" for p in self.procs)


@contextlib.contextmanager
def running_stack(lab: VcsimLab, base: Path) -> Iterator[Stack]:
    procs: list[Proc] = []
    with running_sshd(nbd_count=8) as sshd:
        try:
            admin = _secret(base / "admin-token", secrets.token_hex(16))
            node_token = _secret(base / "node-token", secrets.token_hex(16))
            password = _secret(base / "vcenter-password", lab.password)
            repository = base / "repository"
            node_port = free_port()
            hub_toml = write_toml(
                base / "hub.toml",
                {
                    "api": {"listen": f"127.0.0.1:{sshd.api_port}", "token_file": str(admin)},
                    "nbd": {"port_range": f"{sshd.nbd_ports[0]}-{sshd.nbd_ports[1]}"},
                    "repository": {"path": str(repository)},
                    "state": {"db": str(base / "hub.db")},
                    "nodes.test": {
                        "api_url": f"http://127.0.0.1:{sshd.reverse_port}",
                        "token_file": str(node_token),
                    },
                },
            )
            node_toml = write_toml(
                base / "node.toml",
                {
                    "api": {"listen": f"{NODE_HOST}:{node_port}", "token_file": str(node_token)},
                    "node": {"id": "test"},
                    "hub": {
                        "api_url": f"http://{NODE_HOST}:{sshd.api_port}",
                        "nbd_host": NODE_HOST,
                    },
                    "vcenter": {
                        "url": lab.url,
                        "user": lab.user,
                        "password_file": str(password),
                        "thumbprint": lab.thumbprint,
                    },
                    "backup": {"transport": "https", "connections_per_disk": 2},
                },
            )
            tunnel_cfg = sshd.tunnel_config(
                base / "tunnel-status.json",
                forwards={"reverse_target": f"127.0.0.1:{node_port}", "bind": NODE_HOST},
            )
            # The reverse forward's target is the node API, which listens on 127.0.0.2.
            tunnel_cfg["forwards"]["reverse_target"] = f"{NODE_HOST}:{node_port}"
            tunnel_toml = write_toml(base / "tunnel.toml", tunnel_cfg)

            procs.append(start(base, "hub", "hub", "serve", "--config", str(hub_toml)))
            procs.append(start(base, "node", "node", "serve", "--config", str(node_toml)))
            procs.append(start(base, "tunnel", "tunnel", "run", "--config", str(tunnel_toml)))

            def tunnel_up() -> bool:
                status = base / "tunnel-status.json"
                return status.exists() and json.loads(status.read_text()).get("connected", False)

            wait_until(tunnel_up, "the tunnel to connect", procs)
            wait_until(lambda: port_is_listening(sshd.reverse_port), "the reverse forward", procs)
            yield Stack(
                base,
                sshd,
                f"http://{NODE_HOST}:{sshd.api_port}",
                node_token,
                admin,
                repository,
                procs,
            )
        finally:
            for p in reversed(procs):
                p.stop()


def assert_backup_matches(stack: Stack, record: dict, expected: dict[str, str]) -> None:
    assert record["status"] == "completed", (record, stack.logs())
    disks = {d["disk_id"]: d for d in record["disk_results"]}
    assert set(disks) == set(expected)
    for disk_id, sha in expected.items():
        path = Path(disks[disk_id]["qcow2_path"])
        assert path.is_relative_to(stack.repository)
        assert disks[disk_id]["sha256"] == sha
        # Read back from the file itself, not from what anyone reported.
        assert sha256_of_image(str(path)) == sha, disk_id


def assert_nothing_left(stack: Stack) -> None:
    m = stack.metrics()
    assert m["allocated"] == 0, m
    assert m["qemu_nbd_processes"] == 0, m
    for port in range(stack.sshd.nbd_ports[0], stack.sshd.nbd_ports[1] + 1):
        assert not port_is_listening(port), f"hub port {port} still served"


def test_three_disk_vm_through_hub_and_tunnel(vcsim: VcsimLab, tmp_path: Path) -> None:
    with running_stack(vcsim, tmp_path) as stack, SnapshotWatch(vcsim) as watch:
        r = stack.cli(
            "backup", "start", "--hub", stack.hub_url, "--vm", vcsim.vm,
            "--token-file", str(stack.node_token), "--wait", "--json",
        )  # fmt: skip
        assert r.returncode == 0, (r.stderr, stack.logs())
        record = json.loads(r.stdout)
        assert record["node"] == "test"
        assert_backup_matches(stack, record, vcsim.sha256s)
        assert len(watch.seen) == 1, watch.seen
        assert record["snapshot"] in watch.seen
        assert remaining_snapshots(vcsim) == []
        assert_nothing_left(stack)

        verify = stack.cli(
            "backup", "verify", record["id"], "--hub", stack.hub_url,
            "--token-file", str(stack.admin_token), "--json",
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["ok"] is True


def test_unknown_vm_is_404_and_leaves_nothing(vcsim: VcsimLab, tmp_path: Path) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        r = stack.cli(
            "backup", "start", "--hub", stack.hub_url, "--vm", "no-such-vm",
            "--token-file", str(stack.node_token),
        )  # fmt: skip
        assert r.returncode == 1
        assert "404" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert_nothing_left(stack)


@pytest.fixture(scope="module")
def big_vm(vcsim: VcsimLab) -> dict[str, str]:
    """Re-seed the VM with disks large enough that a copy is still running after
    the outage starts (the https source reads the whole capacity)."""
    session = VsphereSession.connect(
        VcenterParams(vcsim.url, vcsim.user, vcsim.password, insecure=True)
    )
    try:
        disks = seed_vm(session, vcsim.vm, [384 << 20, 256 << 20, 320 << 20], seed="outage")
    finally:
        session.close()
    return {d.disk_id: d.sha256 for d in disks}


def test_hub_sshd_down_10s_mid_copy_still_bit_identical(
    vcsim: VcsimLab, big_vm: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        started = stack.api("POST", "/api/v1/backups", {"vm": vcsim.vm})
        backup_id = started["id"]

        def copying() -> bool:
            rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            assert rec["status"] in ("pending", "running"), rec
            return any((d.get("bytes_copied") or 0) > 0 for d in rec["disk_results"])

        wait_until(copying, "the copy to start", stack.procs, timeout=120)
        stack.sshd.kill()
        time.sleep(10)
        stack.sshd.start()

        def finished() -> bool:
            try:
                rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            except OSError:  # the tunnel is still reconnecting
                return False
            return rec["status"] not in ("pending", "running")

        wait_until(finished, "the backup to finish", stack.procs, timeout=600)
        record = stack.api("GET", f"/api/v1/backups/{backup_id}")
        assert_backup_matches(stack, record, big_vm)
        assert remaining_snapshots(vcsim) == []
        assert_nothing_left(stack)
        # The outage really hit the copy: the node's NBD connections were refused
        # by the tunnel while the hub was down, and the tunnel came back by itself.
        tunnel_log = next(p for p in stack.procs if p.name == "tunnel").log.read_text()
        assert "event=forward_refused" in tunnel_log
        assert tunnel_log.count("event=connected") >= 2
