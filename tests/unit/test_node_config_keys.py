"""The node.toml keys added for backups have defaults and are checked."""

from __future__ import annotations

import pytest

from sendense_tools.config import parse_config
from sendense_tools.errors import ConfigError
from sendense_tools.node.config import NodeConfig


def test_defaults():
    cfg = parse_config({}, NodeConfig)
    assert cfg.backup.retry_for == 300.0
    assert cfg.hub.report_interval == 1.0
    assert cfg.vcenter.ca_file == ""
    assert cfg.vcenter.insecure is False


def test_values_are_checked():
    cfg = parse_config({"backup": {"retry_for": 30}, "hub": {"report_interval": 0.5}}, NodeConfig)
    assert cfg.backup.retry_for == 30 and cfg.hub.report_interval == 0.5
    with pytest.raises(ConfigError, match=r"backup\.retry_for"):
        parse_config({"backup": {"retry_for": 0}}, NodeConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"vcenter": {"verify": False}}, NodeConfig)
