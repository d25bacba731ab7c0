"""read_tokens: a node's token is its own, never the admin's or another node's."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendense_tools.config import parse_config
from sendense_tools.errors import ConfigError
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.service import read_tokens


def secret(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def config(tmp_path: Path, tokens: dict[str, str]) -> HubConfig:
    admin = secret(tmp_path / "admin", "admin-secret")
    nodes = {
        node: {"token_file": secret(tmp_path / f"{node}.token", token)}
        for node, token in tokens.items()
    }
    return parse_config({"api": {"token_file": admin}, "nodes": nodes}, HubConfig)


def test_each_node_gets_its_own_token(tmp_path: Path):
    admin, nodes = read_tokens(config(tmp_path, {"a": "token-a", "b": "token-b"}))
    assert admin == "admin-secret"
    assert nodes == {"a": "token-a", "b": "token-b"}


def test_a_node_holding_the_admin_token_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nodes\.b\.token_file: .* holds the admin token"):
        read_tokens(config(tmp_path, {"a": "token-a", "b": "admin-secret"}))


def test_two_nodes_sharing_a_token_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nodes\.b\.token_file: .* holds node a's token"):
        read_tokens(config(tmp_path, {"a": "same", "b": "same"}))
