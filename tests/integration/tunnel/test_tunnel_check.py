"""`sendense tunnel check`: one PASS/FAIL line per pre-flight check."""

from __future__ import annotations

import asyncio
import subprocess

from tests.fixtures.ports import free_port
from tests.fixtures.sshd import ROOT, write_toml
from tests.integration.tunnel.conftest import tunnel_command


def _check(sshd, **sections) -> subprocess.CompletedProcess:
    cfg = sshd.tunnel_config(sshd.base / "s.json", **sections)
    config = write_toml(sshd.base / "check.toml", cfg)
    return subprocess.run(
        tunnel_command("check", "--config", str(config)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


async def test_all_checks_pass_against_a_good_hub(sshd, hub_echo):
    r = await asyncio.to_thread(_check, sshd)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["PASS", "key"],
        ["PASS", "known_hosts"],
        ["PASS", "reachable"],
        ["PASS", "auth"],
        ["PASS", "forwards"],
    ]
    # The report names where this node's slots lead: its own sockets on the hub.
    assert f"{sshd.slot_socket(sshd.slots[0])} .. {sshd.slot_socket(sshd.slots[-1])}" in lines[-1]


def test_a_hub_api_that_does_not_answer_fails_the_forwards_line(sshd):
    r = _check(sshd)
    assert r.returncode == 1
    assert f"FAIL  forwards     hub API 127.0.0.1:{sshd.api_port} not answering" in r.stdout


async def test_old_layout_forwards_refused_by_the_hub_fail(sshd, hub_echo):
    # A node configured for the old TCP layout against a hub whose sshd lists sockets.
    r = await asyncio.to_thread(_check, sshd, forwards={"nbd_listen": "tcp"})
    assert r.returncode == 1
    assert f"refuses 127.0.0.1:{sshd.slots[0]} to sdt-a (PermitOpen)" in r.stdout


def test_each_broken_precondition_fails_its_line(sshd):
    sshd.client_key.chmod(0o644)
    sshd.known_hosts.write_text("")
    r = _check(sshd)
    assert r.returncode == 1
    out = r.stdout
    assert "FAIL  key" in out and "mode 0644" in out
    assert "FAIL  known_hosts" in out
    assert "PASS  reachable" in out
    assert "FAIL  auth" in out


def test_unreachable_hub_fails(sshd):
    r = _check(sshd, hub={"port": free_port(), "connect_timeout": 5})
    assert r.returncode == 1
    assert "FAIL  reachable" in r.stdout and "FAIL  auth" in r.stdout
