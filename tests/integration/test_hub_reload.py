"""`systemctl reload sendense-hub` (SIGHUP) while a backup runs: the node table
changes, the running backup does not notice (tests/fixtures/stack.py)."""

from __future__ import annotations

import json
import secrets
import signal
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.sshd import TEST_NODE, write_toml
from tests.fixtures.stack import Proc, Stack, running_stack, wait_until
from tests.fixtures.vcsim import VcsimLab, remaining_snapshots
from tests.integration.test_end_to_end import assert_backup_matches, assert_nothing_left


@pytest.fixture(scope="module")
def big_vm(vcsim: VcsimLab) -> dict[str, str]:
    """Disks large enough that the copy is still running across a few reloads."""
    return vcsim.reseed([384 << 20, 256 << 20, 320 << 20], seed="reload")


class HubFile:
    """hub.toml of the running stack, rewritten node by node."""

    def __init__(self, stack: Stack) -> None:
        self.path = stack.base / "hub.toml"
        self.base = stack.base
        self.config = tomllib.loads(self.path.read_text())

    def add_node(self, node: str) -> str:
        token = secrets.token_hex(16)
        token_file = self.base / f"{node}-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        entry = {"api_url": "http://127.0.0.1:9", "token_file": str(token_file)}
        self.config["nodes"][node] = entry
        return token

    def remove_node(self, node: str) -> None:
        del self.config["nodes"][node]

    def write(self) -> None:
        sections = {k: v for k, v in self.config.items() if k != "nodes"}
        sections.update({f"nodes.{n}": entry for n, entry in self.config["nodes"].items()})
        write_toml(self.path, sections)


def hub_proc(stack: Stack) -> Proc:
    return next(p for p in stack.procs if p.name == "hub")


def reload_hub(stack: Stack, message: str, count: int) -> None:
    """SIGHUP the hub and wait for the `count`th log line holding `message`."""
    hub = hub_proc(stack)
    hub.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: hub.log.read_text().count(message) >= count, message, stack.procs)


def answer(stack: Stack, token: str) -> int:
    """The hub API's status for a request made with `token` (straight to the hub)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.sshd.api_port}/api/v1/nbd/metrics",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_node_table_reload_during_a_backup(
    vcsim: VcsimLab, big_vm: dict[str, str], tmp_path: Path
) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        hub = hub_proc(stack)
        backup_id = stack.api("POST", "/api/v1/backups", {"vm": vcsim.vm})["id"]

        def copying() -> bool:
            rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            assert rec["status"] in ("pending", "running"), rec
            return any((d.get("bytes_copied") or 0) > 0 for d in rec["disk_results"])

        wait_until(copying, "the copy to start", stack.procs, timeout=120)

        hub_file = HubFile(stack)
        b_token = hub_file.add_node("b")
        assert answer(stack, b_token) == 401
        hub_file.write()
        reload_hub(stack, "reloaded the node table", 1)
        assert answer(stack, b_token) == 200

        hub_file.remove_node("b")
        c_token = hub_file.add_node("c")
        hub_file.write()
        reload_hub(stack, "reloaded the node table", 2)
        assert answer(stack, b_token) == 401
        assert answer(stack, c_token) == 200

        # A broken file changes nothing: one line says why, the hub goes on.
        good = hub_file.path.read_text()
        hub_file.path.write_text(good + "[nodes.d]\napi_url = 'http://127.0.0.1:9'\n")
        reload_hub(stack, "reload refused", 1)
        refused = [line for line in hub.log.read_text().splitlines() if "reload refused" in line]
        assert len(refused) == 1 and "nodes.d.token_file" in refused[0], refused
        assert answer(stack, c_token) == 200

        # Every reload happened while the copy was running.
        rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
        assert rec["status"] in ("pending", "running"), "the backup ended before the reloads"

        def finished() -> bool:
            rec = stack.api("GET", f"/api/v1/backups/{backup_id}")
            return rec["status"] not in ("pending", "running")

        wait_until(finished, "the backup to finish", stack.procs, timeout=600)
        record = stack.api("GET", f"/api/v1/backups/{backup_id}")
        assert_backup_matches(stack, record, big_vm)
        assert record["node"] == TEST_NODE
        assert remaining_snapshots(vcsim) == []
        assert_nothing_left(stack)
        assert hub.proc.poll() is None, "the hub exited"


def test_a_changed_listener_needs_a_restart(vcsim: VcsimLab, tmp_path: Path) -> None:
    with running_stack(vcsim, tmp_path) as stack:
        hub_file = HubFile(stack)
        hub_file.config["repository"]["path"] = str(tmp_path / "elsewhere")
        token = hub_file.add_node("b")
        hub_file.write()
        reload_hub(stack, "reloaded the node table", 1)
        log = hub_proc(stack).log.read_text()
        assert "[repository] changed: needs a restart" in log, log
        assert answer(stack, token) == 200  # the node table still changed
        r = stack.cli(
            "backup", "start", "--hub", stack.hub_url, "--vm", vcsim.vm,
            "--token-file", str(stack.node_token), "--wait", "--json",
        )  # fmt: skip
        assert r.returncode == 0, (r.stderr, stack.logs())
        record = json.loads(r.stdout)
        assert record["status"] == "completed", record
        for disk in record["disk_results"]:
            assert Path(disk["qcow2_path"]).is_relative_to(stack.repository)
        assert not (tmp_path / "elsewhere").exists()
