"""The policy and prune units and configs the roles render, read by systemd and the product.

Timers and services are read as systemd reads them (last value wins) and checked
by `systemd-analyze verify`; node.toml and hub.toml with policies load through
the product's own config loaders.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sendense_tools.config import parse_config
from sendense_tools.hub.config import HubConfig
from sendense_tools.node.config import NodeConfig
from sendense_tools.policy.model import Policy
from tests.fixtures import roles
from tests.unit.roles.test_units import unit

POLICIES = [
    {"name": "lab", "vms": ["DC0_C0_RP0_VM0"], "keep_last": 2, "randomized_delay": 60},
    {"name": "lab-chain", "vms": ["DC0_C0_RP0_VM1", "vm-42"], "schedule": "Sun *-*-* 03:00",
     "keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0},
    {"name": "prod", "folder": "DC0/vm/prod \"eu\""},
]  # fmt: skip
# The sendense command the units run: this venv's, so that systemd finds it executable.
VENV = str(Path(sys.executable).parent.parent)


def node_variables() -> dict:
    return roles.node_variables(sendense_node_policies=POLICIES, sendense_node_venv=VENV)


def timer(policy: dict) -> dict[str, str]:
    return unit(
        "sendense_node",
        "sendense-policy.timer.j2",
        {**node_variables(), "sendense_node_policy": policy},
    )


def effective() -> list[dict]:
    return node_variables()["sendense_node_policies_effective"]


def test_policy_defaults_are_the_models():
    defaults = roles.role_defaults("sendense_node")["sendense_node_policy_defaults"]
    assert defaults == {k: f.default for k, f in Policy.model_fields.items()}


@pytest.mark.parametrize("name", [p["name"] for p in POLICIES])
def test_a_policy_timer_runs_its_policy_on_its_schedule(name):
    policy = next(p for p in effective() if p["name"] == name)
    settings = timer(policy)
    given = next(p for p in POLICIES if p["name"] == name)
    assert settings["OnCalendar"] == given.get("schedule", "*-*-* 02:00:00")
    assert settings["RandomizedDelaySec"] == str(given.get("randomized_delay", 1800))
    assert settings["Persistent"] == "true"
    assert settings["Unit"] == f"sendense-policy@{name}.service"
    assert settings["WantedBy"] == "timers.target"


def test_the_policy_service_runs_one_policy_with_the_node_config():
    variables = node_variables()
    service = unit("sendense_node", "sendense-policy@.service.j2", variables)
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == (
        f"{VENV}/bin/sendense policy run %i --config {variables['sendense_node_config_file']}"
    )
    assert service["User"] == variables["sendense_node_user"]


def test_the_prune_units_run_a_prune_on_the_hub_schedule():
    hub = roles.resolved_defaults("sendense_hub", sendense_hub_venv=VENV)
    service = unit("sendense_hub", "sendense-prune.service.j2", hub)
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == (
        f"{VENV}/bin/sendense backup prune --hub http://127.0.0.1:8082"
        f" --token-file {hub['sendense_hub_token_file']}"
    )
    settings = unit("sendense_hub", "sendense-prune.timer.j2", hub)
    assert settings["OnCalendar"] == "*-*-* 05:00:00"
    assert settings["RandomizedDelaySec"] == "900"
    assert settings["Persistent"] == "true"
    assert settings["Unit"] == "sendense-prune.service"


def _write_units(tmp_path: Path) -> list[Path]:
    variables = node_variables()
    files = {"sendense-policy@.service": roles.render(
        "sendense_node", "sendense-policy@.service.j2", variables)}  # fmt: skip
    for policy in effective():
        with_policy = {**variables, "sendense_node_policy": policy}
        files[f"sendense-policy-{policy['name']}.timer"] = roles.render(
            "sendense_node", "sendense-policy.timer.j2", with_policy
        )
    hub = roles.resolved_defaults("sendense_hub", sendense_hub_venv=VENV)
    for name in ("sendense-prune.service", "sendense-prune.timer"):
        files[name] = roles.render("sendense_hub", f"{name}.j2", hub)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return [tmp_path / n for n in files if n.endswith(".timer")]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_rendered_units(tmp_path):
    timers = _write_units(tmp_path)
    instances = [tmp_path / f"sendense-policy@{p['name']}.service" for p in effective()]
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, timers), *map(str, instances),
         str(tmp_path / "sendense-prune.service")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # And the check can fail: a schedule systemd does not read.
    bad = tmp_path / "sendense-policy-lab.timer"
    bad.write_text(bad.read_text().replace("OnCalendar=*-*-* 02:00:00", "OnCalendar=02h"))
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode != 0


def test_node_toml_holds_the_policies_with_their_defaults():
    text = roles.render("sendense_node", "node.toml.j2", node_variables())
    config = parse_config(tomllib.loads(text), NodeConfig, source="node.toml")
    assert set(config.policies) == {"lab", "lab-chain", "prod"}
    for policy in effective():
        fields = {k: v for k, v in policy.items() if k != "name"}
        assert config.policies[policy["name"]] == Policy(**fields)
    assert config.policies["prod"].folder == 'DC0/vm/prod "eu"'


def test_hub_toml_holds_each_nodes_policies():
    record = {"id": "node-a", "user": "sdt-node-a", "reverse_port": 9081,
              "public_key": roles.HOST_KEY, "policies": effective()}  # fmt: skip
    # A record from before policies existed has none.
    old = {"id": "node-b", "user": "sdt-node-b", "reverse_port": 9082, "public_key": roles.HOST_KEY}
    text = roles.hub_toml([record, old])
    config = parse_config(tomllib.loads(text), HubConfig, source="hub.toml")
    node = config.nodes["node-a"]
    assert set(node.policies) == {"lab", "lab-chain", "prod"}
    assert node.policies["lab-chain"].vms == ["DC0_C0_RP0_VM1", "vm-42"]
    assert node.policies["lab"].keep_last == 2
    assert config.nodes["node-b"].policies == {}
    # The hub's reload-or-restart choice (config.yml) reads the text before the
    # first [nodes.*] table: policies must come after it, as node table changes.
    assert "polic" not in text.split("[nodes.", 1)[0]


def test_the_timers_of_removed_policies_are_the_ones_removed():
    unit_dir = "/etc/systemd/system"
    found = ["lab", "old", "lab-chain-2"]
    variables = {
        **node_variables(),
        "sendense_node_policy_timer_files": {
            "files": [{"path": f"{unit_dir}/sendense-policy-{n}.timer"} for n in found]
        },
    }
    removed = roles.set_fact(
        "sendense_node", "policies.yml", "sendense_node_policy_timers_removed", variables
    )
    assert removed == ["sendense-policy-lab-chain-2.timer", "sendense-policy-old.timer"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
@pytest.mark.parametrize(
    ("role", "template", "unit_name"),
    [
        ("sendense_node", "sendense-policy@.service", "sendense-policy@lab.service"),
        ("sendense_hub", "sendense-prune.service", "sendense-prune.service"),
    ],
)
def test_the_new_services_are_hardened_like_the_others(tmp_path, role, template, unit_name):
    """systemd-analyze security, offline, of the unit and the runtime's drop-in."""
    units = tmp_path / "etc" / "systemd" / "system"
    (units / f"{template}.d").mkdir(parents=True)
    variables = node_variables() if role == "sendense_node" else roles.resolved_defaults(role)
    (units / template).write_text(roles.render(role, f"{template}.j2", variables))
    runtime = roles.resolved_defaults("sendense_runtime")
    (units / f"{template}.d" / "50-hardening.conf").write_text(
        roles.render("sendense_runtime", "hardening.conf.j2", runtime)
    )
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={tmp_path}", "--no-pager",
         unit_name],
        capture_output=True, text=True, timeout=60, check=False,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    last = [line for line in run.stdout.splitlines() if "Overall exposure level" in line][-1]
    assert float(last.split(":", 1)[1].split()[0]) <= 1.5, last


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_the_inventories_policies_load_as_the_node_reads_them(inventory):
    group_vars = roles.ROOT / "inventory" / inventory / "group_vars"
    policies = roles.load_yaml(group_vars / "nodes.yml")["sendense_node_policies"]
    variables = roles.node_variables(sendense_node_policies=policies)
    text = roles.render("sendense_node", "node.toml.j2", variables)
    config = parse_config(tomllib.loads(text), NodeConfig, source=f"inventory/{inventory}")
    assert set(config.policies) == {p["name"] for p in policies}
    if inventory == "lab":
        # The lab seeds every VM its policies name (tests/infra backs them up).
        seeded = roles.load_yaml(group_vars / "vcenters.yml")["sendense_lab_vcenter_vms"]
        names = {v["name"] for v in seeded} | {"DC0_C0_RP0_VM0"}  # the first: the lab VM
        assert {vm for p in config.policies.values() for vm in p.vms} <= names
        assert config.policies["lab"].keep_last == 2
