import os
from pathlib import Path

import pytest

from sendense_tools.config import load_config, read_secret
from sendense_tools.errors import ConfigError
from sendense_tools.hub.config import HubConfig
from sendense_tools.node.config import NodeConfig
from sendense_tools.tunnel.config import TunnelConfig


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_match_the_design_contract(tmp_path):
    hub = load_config(write(tmp_path, ""), HubConfig)
    assert hub.api.listen == ("127.0.0.1", 8082)
    assert hub.nbd.port_range == (10100, 10200)
    assert hub.nbd.shared == 10
    node = load_config(write(tmp_path, ""), NodeConfig)
    assert node.api.listen == ("127.0.0.1", 8081)
    assert node.backup.connections_per_disk == 2
    tun = load_config(write(tmp_path, ""), TunnelConfig)
    assert tun.forwards.reverse_port == 9081
    assert (tun.backoff.initial, tun.backoff.max) == (5, 60)
    assert (tun.keepalive.interval, tun.keepalive.count_max) == (30, 3)


def test_hub_nodes_tables(tmp_path):
    text = '[nodes.site-a]\napi_url = "http://127.0.0.1:9082"\ntoken_file = "/t/site-a"\n'
    cfg = load_config(write(tmp_path, text), HubConfig)
    assert cfg.nodes["site-a"].api_url == "http://127.0.0.1:9082"
    assert cfg.nodes["site-a"].token_file == "/t/site-a"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[api]\nlisen = '127.0.0.1:1'\n", "api.lisen: unknown key"),
        ("[nbd]\nport_range = '200-100'\n", "nbd.port_range"),
        ("[nbd]\nport_range = 'a-b'\n", "nbd.port_range"),
        ("[api\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_readable_line(tmp_path, text, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), HubConfig)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", HubConfig)


def test_secret_must_be_private(tmp_path):
    p = tmp_path / "token"
    p.write_text("s3cret\n")
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        read_secret(p, "API token")
    os.chmod(p, 0o600)
    assert read_secret(p, "API token") == "s3cret"
