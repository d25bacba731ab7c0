"""The systemd units the roles render, read as systemd reads them (last value wins)."""

from __future__ import annotations

import tomllib

from tests.fixtures import roles


def unit(role: str, template: str, variables: dict) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in roles.render(role, template, variables).splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


def test_hub_unit_reloads_with_sighup_and_has_a_watchdog():
    hub = unit("sendense_hub", "sendense-hub.service.j2", roles.resolved_defaults("sendense_hub"))
    assert hub["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(hub["WatchdogSec"]) > 0


def test_node_unit_outwaits_the_snapshot_removal_it_does_at_stop():
    variables = roles.node_variables()
    node_toml = tomllib.loads(roles.render("sendense_node", "node.toml.j2", variables))
    node = unit("sendense_node", "sendense-node.service.j2", variables)
    assert int(node["TimeoutStopSec"]) > node_toml["backup"]["snapshot_remove_timeout"]
    # A deployment that waits longer for vCenter gets a longer stop timeout too.
    variables["sendense_node_backup_snapshot_remove_timeout"] = 1800
    node_toml = tomllib.loads(roles.render("sendense_node", "node.toml.j2", variables))
    node = unit("sendense_node", "sendense-node.service.j2", variables)
    assert node_toml["backup"]["snapshot_remove_timeout"] == 1800
    assert int(node["TimeoutStopSec"]) > 1800
