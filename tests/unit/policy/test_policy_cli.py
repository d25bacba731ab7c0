"""`sendense policy check|list|run` on node.toml files that need no vCenter or hub
to be judged: exit 2 and one line for each config the timer must not run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.sshd import write_toml

KEEPS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")


def sendense(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendense_tools", *args], capture_output=True, text=True, timeout=60
    )


def node_toml(tmp_path: Path, policies: dict[str, dict]) -> str:
    password = tmp_path / "vcenter-password"
    password.write_text("pass\n")
    password.chmod(0o600)
    sections: dict[str, dict] = {
        # Nothing listens there: what does not need vCenter must not try it.
        "vcenter": {"url": f"https://127.0.0.1:{free_port()}", "password_file": str(password)},
        **{f"policies.{name}": p for name, p in policies.items()},
    }
    return str(write_toml(tmp_path / "node.toml", sections))


def test_check_accepts_good_policies(tmp_path: Path) -> None:
    config = node_toml(
        tmp_path,
        {"daily": {"vms": ["web1", "vm-12"]}, "prod": {"folder": "DC0/vm/prod", "keep_last": 0}},
    )
    r = sendense("policy", "check", "--config", config)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{config}: 2 policies OK: daily, prod"


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ({"p": {"vms": ["a"], "schedule": "every tuesday"}}, "is not a systemd OnCalendar"),
        ({"p": {"vms": ["a"], "schedule": "*-*-* 25:00:00"}}, "is not a systemd OnCalendar"),
        ({"p": {"vms": ["a"], **dict.fromkeys(KEEPS, 0)}}, "keeps nothing"),
        ({"p": {"vms": ["a"]}, "q": {"vms": ["b", "a"]}}, "a is in two policies: p and q"),
        ({"p": {"folder": "DC0/vm"}, "q": {"folder": "DC0/vm/sub"}}, "is inside DC0/vm"),
        ({"Bad_Name": {"vms": ["a"]}}, "policy name 'Bad_Name' must be"),
        ({"p": {"vms": ["a"], "keep_hourly": 3}}, "unknown key"),
        ({"p": {}}, "names no VM"),
    ],
    ids=["words", "hour-25", "keeps-nothing", "vm-twice", "nested-folder", "name", "key", "no-vm"],
)
def test_check_refuses_a_bad_node_toml_in_one_line(
    tmp_path: Path, policies: dict, expected: str
) -> None:
    r = sendense("policy", "check", "--config", node_toml(tmp_path, policies))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert expected in r.stderr
    assert r.stdout == ""


def test_run_refuses_a_policy_node_toml_lacks(tmp_path: Path) -> None:
    config = node_toml(tmp_path, {"daily": {"vms": ["web1"]}})
    r = sendense("policy", "run", "nightly", "--config", config)
    assert r.returncode == 2
    assert r.stderr.strip() == f"sendense: policy 'nightly' is not in {config}"


def test_run_refuses_a_bad_node_toml_before_anything(tmp_path: Path) -> None:
    config = node_toml(tmp_path, {"daily": {"vms": ["web1"], "schedule": "sometimes"}})
    r = sendense("policy", "run", "daily", "--config", config)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "sometimes" in r.stderr


def test_run_without_vcenter_fails_in_one_line(tmp_path: Path) -> None:
    config = node_toml(tmp_path, {"daily": {"vms": ["web1"]}})
    r = sendense("policy", "run", "daily", "--config", config)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "vCenter" in r.stderr, r.stderr


def test_list_without_vcenter_still_shows_the_policies(tmp_path: Path) -> None:
    config = node_toml(tmp_path, {"daily": {"vms": ["web1"], "keep_daily": 3}})
    r = sendense("policy", "list", "--config", config, "--json")
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(r.stdout)
    assert entry["name"] == "daily" and entry["keep_daily"] == 3 and entry["resolved"] is None
    assert entry["error"].startswith("VMs not resolved:")
    assert len(r.stderr.strip().splitlines()) == 1 and "warning" in r.stderr
