"""The hub role's choice after rendering hub.toml: reload (nodes only) or restart."""

from __future__ import annotations

import base64
from typing import Any

from tests.fixtures import roles

A = {"id": "node-a", "user": "sdt-node-a", "reverse_port": 9081, "public_key": roles.HOST_KEY}
B = {"id": "node-b", "user": "sdt-node-b", "reverse_port": 9082, "public_key": roles.HOST_KEY}


def hub_toml(nodes: list[dict[str, Any]], **settings: Any) -> str:
    return roles.render(
        "sendense_hub",
        "hub.toml.j2",
        {"sendense_hub_ctx": roles.hub_settings(**settings), "sendense_hub_ctx_nodes": nodes},
    )


def settings_changed(before: str | None, after: str) -> bool:
    """What config.yml's set_fact decides, given the file on the hub and the new render."""
    slurped = {} if before is None else {"content": base64.b64encode(before.encode()).decode()}
    value = roles.set_fact(
        "sendense_hub",
        "config.yml",
        "sendense_hub_settings_changed",
        {"sendense_hub_config_before": slurped, "lookup": lambda kind, template: after},
    )
    return value if isinstance(value, bool) else value.strip() == "True"


def test_a_node_added_or_removed_is_a_reload():
    assert not settings_changed(hub_toml([A]), hub_toml([A, B]))
    assert not settings_changed(hub_toml([A, B]), hub_toml([B]))
    assert not settings_changed(hub_toml([]), hub_toml([A]))
    assert not settings_changed(hub_toml([A]), hub_toml([]))


def test_the_same_file_is_no_settings_change():
    assert not settings_changed(hub_toml([A, B]), hub_toml([A, B]))


def test_any_other_setting_is_a_restart():
    before = hub_toml([A])
    assert settings_changed(before, hub_toml([A], sendense_hub_nbd_max_exports=202))
    assert settings_changed(before, hub_toml([A, B], sendense_hub_jobs_stall_timeout=60))
    assert settings_changed(before, hub_toml([A], sendense_hub_repository="/srv/repository"))


def test_a_first_deployment_is_a_settings_change():
    assert settings_changed(None, hub_toml([A]))
