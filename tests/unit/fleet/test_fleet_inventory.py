"""The fleet's generated inventory, read back the way Ansible reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fleet.inventory import NETWORK, Plan, write

ROOT = Path(__file__).resolve().parents[3]


def ansible_inventory(hosts_yml: Path) -> dict:
    """`ansible-inventory --list` of the generated inventory (group_vars resolved)."""
    binary = Path(sys.executable).with_name("ansible-inventory")
    done = subprocess.run(
        [str(binary), "-i", str(hosts_yml), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout)


def test_twenty_nodes_one_hub_each_its_own_vm(tmp_path):
    inv = ansible_inventory(write(Plan(20), tmp_path, "AA:BB"))
    nodes = inv["nodes"]["hosts"]
    assert nodes == [f"sds-node-{k:02d}" for k in range(1, 21)]
    assert inv["hubs"]["hosts"] == ["sds-hub"]
    assert inv["vcenters"]["hosts"] == ["sds-vcenter"]
    meta = inv["_meta"]["hostvars"]
    vcenter = meta["sds-vcenter"]
    seeded = vcenter["sendense_lab_vcenter_vms"]
    # Each node's VM is seeded, none twice, and the simulator creates them all.
    assert len({v["name"] for v in seeded}) == 20
    assert vcenter["sendense_lab_vcenter_sim_vms"] == 20
    assert all(1 <= len(v["disks"]) <= 3 for v in seeded)
    for name in nodes:
        v = meta[name]
        assert v["ansible_connection"] == "containers.podman.podman"
        assert v["sendense_node_vcenter_thumbprint"] == "AA:BB"
        assert v["sendense_node_vcenter_url"] == "https://sds-vcenter/sdk"
        assert v["sendense_node_policies"] == []
        # One hub: the role's default (the first of group hubs) names it.
        assert "sendense_node_hub" not in v


def test_the_plan_gives_each_node_its_own_vm_and_disk_count():
    members = Plan(6).members
    assert [m.vm for m in members] == [f"DC0_C0_RP0_VM{k}" for k in range(6)]
    assert [len(m.disks) for m in members] == [1, 2, 3, 1, 2, 3]
    # The node id the role derives from the host name is the host name itself.
    assert all(m.id == m.name for m in members)


def test_several_hubs_name_each_nodes_hub_in_its_host_vars(tmp_path):
    inv = ansible_inventory(write(Plan(5, hubs=2), tmp_path))
    assert inv["hubs"]["hosts"] == ["sds-hub-01", "sds-hub-02"]
    meta = inv["_meta"]["hostvars"]
    hubs = [meta[f"sds-node-{k:02d}"]["sendense_node_hub"] for k in range(1, 6)]
    assert hubs == ["sds-hub-01", "sds-hub-02", "sds-hub-01", "sds-hub-02", "sds-hub-01"]


def test_rewriting_replaces_the_thumbprint(tmp_path):
    write(Plan(2), tmp_path)
    write(Plan(2), tmp_path, "11:22")
    nodes = yaml.safe_load((tmp_path / "group_vars" / "nodes.yml").read_text())
    assert nodes["sendense_node_vcenter_thumbprint"] == "11:22"


@pytest.mark.parametrize(("nodes", "hubs"), [(0, 1), (100, 1), (3, 0), (3, 4)])
def test_impossible_plans_are_refused(nodes, hubs):
    with pytest.raises(ValueError, match="must be"):
        Plan(nodes, hubs)


def test_names_never_clash_with_molecule_or_the_demo():
    names = Plan(20).containers
    assert len(names) == len(set(names)) == 22
    assert all(n.startswith("sds-") for n in names)
    assert NETWORK not in ("sendense-lab", "sdm-lab", "sdf-lab", "podman")
