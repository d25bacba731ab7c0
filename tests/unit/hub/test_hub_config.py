"""hub.toml: every node names its own token file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sendense_tools.config import load_config, parse_config
from sendense_tools.errors import ConfigError
from sendense_tools.hub.config import HubConfig

NODE_WITHOUT_TOKEN = '[nodes.site-a]\napi_url = "http://127.0.0.1:9082"\n'


def test_a_node_without_token_file_is_a_config_error_naming_the_key(tmp_path: Path):
    path = tmp_path / "hub.toml"
    path.write_text(NODE_WITHOUT_TOKEN)
    with pytest.raises(ConfigError) as exc:
        load_config(path, HubConfig)
    assert "nodes.site-a.token_file" in str(exc.value)


def test_hub_serve_refuses_it_in_one_line(tmp_path: Path):
    path = tmp_path / "hub.toml"
    path.write_text(NODE_WITHOUT_TOKEN)
    run = subprocess.run(
        [sys.executable, "-m", "sendense_tools", "hub", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodes.site-a.token_file" in lines[0], run.stderr


def test_nbd_defaults_are_the_isolated_layout():
    nbd = HubConfig().nbd
    assert (nbd.listen, nbd.socket_dir, nbd.tls_psk) == ("unix", "/run/sendense/nbd", False)
    assert (nbd.port_range, nbd.max_exports) == ((10100, 10200), 404)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[nbd]\nlisten = "udp"\n', "nbd.listen"),
        ('[nbd]\nsocket_dir = "run/nbd"\n', "nbd.socket_dir"),
        ("[nbd]\nmax_exports = 0\n", "nbd.max_exports"),
        ('[nodes."../b"]\ntoken_file = "/t"\n', "node id"),
        ('[nodes.a]\ntoken_file = "/t"\n[nbd]\nsocket_dir = "/' + "x" * 100 + '"\n', "107 bytes"),
    ],
)
def test_bad_nbd_layout_is_a_config_error_naming_it(tmp_path: Path, text: str, key: str):
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, HubConfig)
    assert key in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


def test_jobs_stall_timeout_defaults_to_300_and_must_be_positive():
    assert parse_config({}, HubConfig).jobs.stall_timeout == 300
    assert parse_config({"jobs": {"stall_timeout": 0.5}}, HubConfig).jobs.stall_timeout == 0.5
    for bad in (0, -1):
        with pytest.raises(ConfigError, match=r"jobs\.stall_timeout"):
            parse_config({"jobs": {"stall_timeout": bad}}, HubConfig)
