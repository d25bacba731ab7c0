"""`sendense tunnel check`: one PASS/FAIL line per pre-flight check."""

from __future__ import annotations

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


def test_all_checks_pass_against_a_good_hub(sshd):
    r = _check(sshd)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["PASS", "key"],
        ["PASS", "known_hosts"],
        ["PASS", "reachable"],
        ["PASS", "auth"],
    ]


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
