"""`sendense policy run|list` against the real stack (hub, sshd tunnel, node,
simulator): bounded concurrency, full_every from the hub's records, a busy VM
skipped and not queued, a folder's VMs, and the ways a run is refused."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.fixtures.sshd import write_toml
from tests.fixtures.stack import Stack, running_stack, wait_until
from tests.fixtures.vcsim import VcsimLab
from tests.integration.policy.conftest import BY_NAME, FOLDER, IN_FOLDER, TEMPLATE, VM_NAME

POLICIES = {
    "serial": {"vms": BY_NAME[0:3], "concurrency": 1},
    "pair": {"vms": BY_NAME[3:5], "concurrency": 2},
    "solo": {"vms": [BY_NAME[5]]},
    "every2": {"vms": [VM_NAME], "full_every": 2},
    "infolder": {"folder": FOLDER},
}


@pytest.fixture(scope="module")
def stack(vcsim: VcsimLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(vcsim, tmp_path_factory.mktemp("policy"), policies=POLICIES) as s:
        yield s


def run(
    stack: Stack, name: str, config: Path | None = None, as_json: bool = True
) -> subprocess.CompletedProcess:
    args = ("policy", "run", name, "--config", str(config or stack.node_toml))
    return stack.cli(*args, *(["--json"] if as_json else []), timeout=600)


def node_toml_with(stack: Stack, policies: dict[str, dict]) -> Path:
    """The stack's node.toml with other policies (the hub keeps its own)."""
    sections = tomllib.loads(stack.node_toml.read_text())
    sections.pop("policies", None)
    sections |= {f"policies.{n}": p for n, p in policies.items()}
    return write_toml(stack.base / "cli-node.toml", sections)


def records(stack: Stack, policy: str) -> list[dict]:
    """The hub's records of backups `policy` asked for, oldest first."""
    found = stack.api("GET", "/api/v1/backups?limit=10000", direct=True)
    return [r for r in reversed(found) if r.get("policy") == policy]


class ActiveWatch:
    """The most backups of one policy the hub held pending or running at once,
    read from the hub's list every 50 ms while the run goes on."""

    def __init__(self, stack: Stack, policy: str) -> None:
        self.stack, self.policy, self.most = stack, policy, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ActiveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            # One list, one instant: asking for pending and then for running would count
            # a backup that moved between the two asks twice.
            active = [
                r
                for r in self.stack.api("GET", "/api/v1/backups?limit=10000", direct=True)
                if r.get("policy") == self.policy and r["status"] in ("pending", "running")
            ]
            self.most = max(self.most, len(active))
            time.sleep(0.05)


def outcome(r: subprocess.CompletedProcess) -> dict[str, dict]:
    data = json.loads(r.stdout)
    return {v["vm"]: v for v in data["vms"]}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_concurrency_1_backs_up_one_vm_at_a_time(stack: Stack) -> None:
    with ActiveWatch(stack, "serial") as watch:
        r = run(stack, "serial")
    assert r.returncode == 0, (r.stderr, stack.logs())
    vms = outcome(r)
    assert sorted(vms) == sorted(BY_NAME[0:3])
    assert {v["status"] for v in vms.values()} == {"completed"}
    done = records(stack, "serial")
    assert [d["vm"] for d in done] == BY_NAME[0:3]
    assert {d["status"] for d in done} == {"completed"}
    # Each began after the one before it had ended.
    for before, after in itertools.pairwise(done):
        assert ts(after["created_at"]) >= ts(before["finished_at"]), (before, after)
    assert watch.most == 1
    # One line when each VM starts and one when it ends, nothing else.
    lines = r.stderr.strip().splitlines()
    for d in done:
        assert f"policy serial: {d['vm']} started: backup {d['id']} (mode auto)" in lines
        assert f"policy serial: {d['vm']} completed: backup {d['id']} (full)" in lines
    assert len(lines) == 6, r.stderr


def test_concurrency_2_backs_up_two_vms_at_once(stack: Stack) -> None:
    with ActiveWatch(stack, "pair") as watch:
        r = run(stack, "pair")
    assert r.returncode == 0, (r.stderr, stack.logs())
    done = records(stack, "pair")
    assert sorted(d["vm"] for d in done) == sorted(BY_NAME[3:5])
    assert {d["status"] for d in done} == {"completed"}
    assert watch.most == 2
    assert max(ts(d["created_at"]) for d in done) <= min(ts(d["finished_at"]) for d in done)


def test_full_every_2_makes_every_second_point_a_full(stack: Stack) -> None:
    asked = []
    for _ in range(3):
        r = run(stack, "every2")
        assert r.returncode == 0, (r.stderr, stack.logs())
        asked.append(outcome(r)[VM_NAME]["mode"])
    assert asked == ["auto", "auto", "full"]
    first, second, third = records(stack, "every2")
    assert (first["mode"], second["mode"], third["mode"]) == ("full", "incremental", "full")
    assert second["parent"] == first["id"]
    assert third["parent"] is None and third["mode_reason"] == "full requested"


def test_a_vm_whose_backup_is_running_is_skipped_not_queued(stack: Stack) -> None:
    vm = BY_NAME[5]
    by_hand = stack.api("POST", "/api/v1/backups", {"vm": vm, "mode": "full"})
    node = stack.proc("node")

    def running() -> bool:
        return stack.api("GET", f"/api/v1/backups/{by_hand['id']}")["status"] == "running"

    wait_until(running, "the backup by hand to run", stack.procs)
    # Held running: the node does nothing until SIGCONT.
    node.proc.send_signal(signal.SIGSTOP)
    try:
        r = run(stack, "solo")
    finally:
        node.proc.send_signal(signal.SIGCONT)
    assert r.returncode == 0, (r.stderr, stack.logs())
    assert outcome(r)[vm]["status"] == "skipped"
    assert outcome(r)[vm]["skipped"] == f"backup {by_hand['id']} still running"
    assert r.stderr.strip() == f"policy solo: {vm} skipped: backup {by_hand['id']} still running"
    assert records(stack, "solo") == []

    def ended() -> bool:
        return stack.api("GET", f"/api/v1/backups/{by_hand['id']}")["status"] == "completed"

    wait_until(ended, "the backup by hand to complete", stack.procs, timeout=300)
    assert records(stack, "solo") == []
    mine = stack.api("GET", f"/api/v1/backups?vm={vm}", direct=True)
    assert [m["id"] for m in mine] == [by_hand["id"]]


def test_a_folder_policy_backs_up_every_vm_below_it(stack: Stack) -> None:
    r = run(stack, "infolder")
    assert r.returncode == 0, (r.stderr, stack.logs())
    assert sorted(outcome(r)) == sorted(IN_FOLDER)
    done = records(stack, "infolder")
    assert sorted(d["vm"] for d in done) == sorted(IN_FOLDER)
    assert {d["status"] for d in done} == {"completed"}
    assert stack.api("GET", f"/api/v1/backups?vm={TEMPLATE}", direct=True) == []


def test_list_shows_each_policy_with_its_vms(stack: Stack) -> None:
    r = stack.cli("policy", "list", "--config", str(stack.node_toml), "--json")
    assert r.returncode == 0, r.stderr
    listed = {p["name"]: p for p in json.loads(r.stdout)}
    assert sorted(listed) == sorted(POLICIES)
    assert sorted(v["name"] for v in listed["infolder"]["resolved"]) == sorted(IN_FOLDER)
    assert listed["serial"]["concurrency"] == 1 and listed["serial"]["schedule"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"vms": ["no-such-vm"]}, "policy serial: no-such-vm failed: VM 'no-such-vm' not found"),
        ({"folder": "DC0/vm/nope"}, "sendense: error: policy serial: folder 'DC0/vm/nope' not"),
    ],
    ids=["unknown-vm", "unknown-folder"],
)
def test_an_unknown_vm_or_folder_fails_with_one_line(
    stack: Stack, policy: dict, expected: str
) -> None:
    before = stack.api("GET", "/api/v1/backups?limit=10000", direct=True)
    r = run(stack, "serial", node_toml_with(stack, {"serial": policy}), as_json=False)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(expected), r.stderr
    # The summary table names what failed; a run that could not start prints none.
    assert ("no-such-vm" in r.stdout and "failed" in r.stdout) == ("vms" in policy), r.stdout
    assert stack.api("GET", "/api/v1/backups?limit=10000", direct=True) == before


def test_a_policy_the_hub_lacks_fails_with_one_line(stack: Stack) -> None:
    r = run(stack, "ghost", node_toml_with(stack, {"ghost": {"vms": BY_NAME[0:2]}}))
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "policy ghost: the hub refuses it" in r.stderr and "unknown_policy" in r.stderr
    assert records(stack, "ghost") == []


def test_a_vm_by_name_and_by_folder_is_refused(stack: Stack) -> None:
    shared = IN_FOLDER[0]
    config = node_toml_with(stack, {"serial": {"vms": [shared]}, "infolder": {"folder": FOLDER}})
    before = stack.api("GET", "/api/v1/backups?limit=10000", direct=True)
    r = run(stack, "serial", config)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"policy serial: {shared} failed: VM {shared} is in two policies:"
        f" infolder (folder {FOLDER}) and serial (by name)"
    )
    assert stack.api("GET", "/api/v1/backups?limit=10000", direct=True) == before
