"""node.toml [hub] nbd_host / nbd_ports: the tunnel's forwards, loopback only."""

from __future__ import annotations

import pytest

from sendense_tools.config import parse_config
from sendense_tools.errors import ConfigError
from sendense_tools.node.config import NodeConfig
from sendense_tools.tunnel.config import TunnelConfig


def test_defaults_are_the_tunnels_own():
    node = parse_config({}, NodeConfig).hub
    forwards = parse_config({}, TunnelConfig).forwards
    assert (node.nbd_host, node.nbd_ports) == (forwards.bind, forwards.nbd_ports)


def test_a_range_and_a_loopback_host_are_accepted():
    hub = parse_config({"hub": {"nbd_host": "127.0.0.2", "nbd_ports": "20000-20010"}}, NodeConfig)
    assert (hub.hub.nbd_host, hub.hub.nbd_ports) == ("127.0.0.2", (20000, 20010))


@pytest.mark.parametrize(
    ("hub", "key"),
    [
        ({"nbd_host": "192.0.2.1"}, "hub.nbd_host"),
        ({"nbd_ports": "20010-20000"}, "hub.nbd_ports"),
    ],
)
def test_bad_values_name_the_key(hub, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"hub": hub}, NodeConfig)


def test_the_keys_of_jobs_that_always_end():
    cfg = parse_config({}, NodeConfig)
    assert cfg.node.spool_dir == "/var/lib/sendense/spool"
    assert (cfg.hub.heartbeat_interval, cfg.hub.report_retry_initial) == (30.0, 5.0)
    assert (cfg.hub.report_retry_max, cfg.backup.snapshot_remove_timeout) == (60.0, 600.0)


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        ({"heartbeat_interval": 0.5, "report_interval": 1}, "heartbeat_interval must not"),
        ({"report_retry_initial": 10, "report_retry_max": 5}, "report_retry_max must not"),
        ({"heartbeat_interval": 0}, "hub.heartbeat_interval"),
    ],
)
def test_report_timings_are_checked(hub, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"hub": hub}, NodeConfig)
