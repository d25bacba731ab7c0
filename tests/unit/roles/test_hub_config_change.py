"""The hub role's choice after rendering hub.toml: reload (nodes only) or restart.

Ansible itself decides here (its Jinja differs from a plain one in details such
as escapes in string literals): one ansible-playbook run in check mode, a play
per case, each running the role's config.yml against a hub.toml in tmp_path.
"""

from __future__ import annotations

import grp
import os
from typing import Any

import pytest

from tests.fixtures import roles

A = {"id": "node-a", "user": "sdt-node-a", "reverse_port": 9081, "public_key": roles.HOST_KEY}
B = {"id": "node-b", "user": "sdt-node-b", "reverse_port": 9082, "public_key": roles.HOST_KEY}


def hub_toml(nodes: list[dict[str, Any]], **settings: Any) -> str:
    return roles.render(
        "sendense_hub",
        "hub.toml.j2",
        {"sendense_hub_ctx": roles.hub_settings(**settings), "sendense_hub_ctx_nodes": nodes},
    )


# name: (the hub.toml on the hub or None, the nodes now, the settings now)
CASES: dict[str, tuple[str | None, list[dict], dict[str, Any]]] = {
    "node added": (hub_toml([A]), [A, B], {}),
    "node removed": (hub_toml([A, B]), [B], {}),
    "first node": (hub_toml([]), [A], {}),
    "last node gone": (hub_toml([A]), [], {}),
    "nothing changed": (hub_toml([A, B]), [A, B], {}),
    "max_exports": (hub_toml([A]), [A], {"sendense_hub_nbd_max_exports": 202}),
    "stall_timeout and a node": (hub_toml([A]), [A, B], {"sendense_hub_jobs_stall_timeout": 60}),
    "repository": (hub_toml([A]), [A], {"sendense_hub_repository": "/srv/repository"}),
    "first deployment": (None, [A], {}),
}


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    """sendense_hub_settings_changed as the role's config.yml sets it, per case."""
    base = tmp_path_factory.mktemp("hub-config")
    group = grp.getgrgid(os.getgid()).gr_name
    plays = []
    for n, (name, (before, nodes, settings)) in enumerate(CASES.items()):
        config = base / f"{n}.toml"
        if before is not None:
            config.write_text(before)
        ctx = {**roles.hub_settings(**settings), "config_file": str(config), "group": group}
        plays.append({
            "name": name,
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.include_role": {"name": "sendense_hub", "tasks_from": "config"},
                 "vars": {"sendense_hub_register_host": "localhost", "sendense_hub_ctx": ctx,
                          "sendense_hub_ctx_nodes": nodes,
                          "sendense_hub_tokens_made": {"changed": False}}},
                {"ansible.builtin.debug": {"var": "sendense_hub_settings_changed"}},
            ],
        })  # fmt: skip
    result = roles.check_playbook(base, plays)
    for config in base.glob("*.toml"):  # check mode: the role wrote nothing
        assert config.read_text() == CASES[list(CASES)[int(config.stem)]][0]
    return {
        play["play"]["name"]: play["tasks"][-1]["hosts"]["localhost"][
            "sendense_hub_settings_changed"
        ]
        for play in result["plays"]
    }


@pytest.mark.parametrize("case", ["node added", "node removed", "first node", "last node gone"])
def test_a_node_added_or_removed_is_a_reload(decisions, case):
    assert decisions[case] is False


def test_the_same_file_is_no_settings_change(decisions):
    assert decisions["nothing changed"] is False


@pytest.mark.parametrize("case", ["max_exports", "stall_timeout and a node", "repository"])
def test_any_other_setting_is_a_restart(decisions, case):
    assert decisions[case] is True


def test_a_first_deployment_is_a_settings_change(decisions):
    assert decisions["first deployment"] is True
