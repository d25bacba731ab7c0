"""The node role's refusals of bad policies, each one line naming what is wrong.

Ansible itself runs the role's checks.yml (in check mode, against localhost, a
play per case); the schedule check asks this machine's `systemd-analyze`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures import roles

LAB = {"name": "lab", "vms": ["DC0_C0_RP0_VM0"], "keep_last": 2}
KEEPS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
CHAIN = {"name": "lab-chain", "vms": ["DC0_C0_RP0_VM1"], "schedule": "Sun *-*-* 03:00"}

# name: (the policies, the one-line refusal or None when the policies pass)
CASES: dict[str, tuple[list[dict[str, Any]], str | None]] = {
    "valid": ([LAB, CHAIN, {"name": "prod", "folder": "DC0/vm/prod"}], None),
    "bad name": (
        [LAB, {"name": "Prod", "vms": ["x"]}],
        "policy name 'Prod' must be 1-32 of a-z, 0-9, '_', '-'",
    ),
    "name too long": (
        [{"name": "a" * 33, "vms": ["x"]}],
        f"policy name '{'a' * 33}' must be 1-32 of a-z, 0-9, '_', '-'",
    ),
    "duplicate name": (
        [LAB, {"name": "lab", "vms": ["other"]}],
        "policy lab is defined twice",
    ),
    "VM in two policies": (
        [LAB, CHAIN, {"name": "again", "vms": ["DC0_C0_RP0_VM1"]}],
        "VM DC0_C0_RP0_VM1 is in two policies: lab-chain and again",
    ),
    "keeps nothing": (
        [{"name": "none", "vms": ["x"], **dict.fromkeys(KEEPS, 0)}],
        "policy none keeps nothing: at least one of keep_last, keep_daily, keep_weekly, "
        "keep_monthly must be > 0",
    ),
    "no VM": ([{"name": "empty"}], "policy empty names no VM: give vms, a folder or both"),
    "bad OnCalendar": (
        [LAB, {"name": "nightly", "vms": ["x"], "schedule": "every night at 2"}],
        "policy nightly: schedule 'every night at 2' is not a systemd OnCalendar expression",
    ),
    "out of range OnCalendar": (
        [{"name": "nightly", "vms": ["x"], "schedule": "*-*-* 25:00:00"}],
        "policy nightly: schedule '*-*-* 25:00:00' is not a systemd OnCalendar expression",
    ),
}

HUB_CASE = "hub: bad prune schedule"
BAD_PRUNE_SCHEDULE = "daily at 5"


def _failure(play: dict) -> str | None:
    """The message of the play's failed task (the first failed item of a loop)."""
    for task in play["tasks"]:
        result = task["hosts"]["localhost"]
        if not result.get("failed"):
            continue
        items = [r for r in result.get("results", []) if r.get("failed")]
        return (items[0] if items else result)["msg"]
    return None


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("node-policies")
    plays = [
        {
            "name": name,
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            # The node's other checks pass: only the policies are under test.
            "vars": {"sendense_node_hubs_group": "all", "sendense_node_hub": "localhost",
                     "sendense_node_vcenter_password": "secret", "sendense_node_id": "node-a",
                     "sendense_node_policies": policies},
            "tasks": [{
                "block": [
                    {"ansible.builtin.include_role": {"name": "sendense_node", "public": True,
                                                      "tasks_from": "checks"}},
                    {"ansible.builtin.debug": {"var": "sendense_node_policies_effective"}},
                ],
                "rescue": [{"ansible.builtin.debug": {"msg": "refused"}}],
            }],
        }
        for name, (policies, _) in CASES.items()
    ]  # fmt: skip
    # The hub's own schedule, the prune timer's: the same judge.
    plays.append({
        "name": HUB_CASE,
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"sendense_hub_prune_schedule": BAD_PRUNE_SCHEDULE},
        "tasks": [{
            "block": [{"ansible.builtin.include_role": {"name": "sendense_hub",
                                                        "tasks_from": "policies"}}],
            "rescue": [{"ansible.builtin.debug": {"msg": "refused"}}],
        }],
    })  # fmt: skip
    out = {}
    for play in roles.check_playbook(base, plays)["plays"]:
        last = play["tasks"][-1]["hosts"]["localhost"]
        out[play["play"]["name"]] = {
            "failure": _failure(play),
            "effective": last.get("sendense_node_policies_effective"),
        }
    return out


@pytest.mark.parametrize("case", [c for c, (_, msg) in CASES.items() if msg])
def test_a_bad_policy_is_refused_with_one_line(outcomes, case):
    want = CASES[case][1]
    got = outcomes[case]["failure"]
    assert got == want
    assert "\n" not in got.strip()


def test_valid_policies_pass_with_the_defaults_filled_in(outcomes):
    assert outcomes["valid"]["failure"] is None
    effective = {p["name"]: p for p in outcomes["valid"]["effective"]}
    defaults = roles.role_defaults("sendense_node")["sendense_node_policy_defaults"]
    assert effective["lab"] == {**defaults, **LAB}
    assert effective["lab-chain"]["schedule"] == "Sun *-*-* 03:00"
    assert effective["prod"]["folder"] == "DC0/vm/prod"
    assert effective["prod"]["keep_last"] == defaults["keep_last"]


def test_a_bad_prune_schedule_is_refused_with_one_line(outcomes):
    assert outcomes[HUB_CASE]["failure"] == (
        f"sendense_hub_prune_schedule '{BAD_PRUNE_SCHEDULE}' is not a systemd OnCalendar expression"
    )
