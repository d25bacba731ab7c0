import json
import os
import random

import pytest
from click.testing import CliRunner

from sendense_tools.config import parse_config
from sendense_tools.errors import ConfigError, SendenseError
from sendense_tools.tunnel.backoff import Backoff
from sendense_tools.tunnel.cli import tunnel
from sendense_tools.tunnel.config import TunnelConfig
from sendense_tools.tunnel.events import format_event
from sendense_tools.tunnel.status import TunnelStatus, read_status, write_status
from sendense_tools.tunnel.supervisor import forward_targets


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    b = Backoff(5, 60, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [5, 10, 20, 40, 60, 60, 60, 60]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    b.reset()
    assert b.next_delay() <= 5


def test_defaults_match_the_design():
    cfg = parse_config({}, TunnelConfig)
    assert (cfg.backoff.initial, cfg.backoff.max) == (5, 60)
    assert (cfg.keepalive.interval, cfg.keepalive.count_max) == (30, 3)
    assert cfg.forwards.nbd_ports == (10100, 10200)
    assert (cfg.forwards.api_port, cfg.forwards.reverse_port) == (8082, 9081)
    assert cfg.forwards.bind == "127.0.0.1"
    assert cfg.tuning.window == 16 * 1024 * 1024
    assert cfg.tuning.ciphers[0] == "aes128-gcm@openssh.com"


@pytest.mark.parametrize("bind", ["0.0.0.0", "192.168.1.10", "hub.example", "::"])
def test_forwards_never_bind_off_loopback(bind):
    with pytest.raises(ConfigError, match=r"forwards\.bind"):
        parse_config({"forwards": {"bind": bind}}, TunnelConfig)


def test_event_lines_are_logfmt_with_quoting():
    line = format_event("connect_failed", "warning", hub="h:22", error='said "no" = bad')
    assert "\n" not in line
    assert " level=warning event=connect_failed hub=h:22 " in line
    assert line.endswith(r'error="said \"no\" = bad"')


def test_status_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "run" / "status.json"
    write_status(path, TunnelStatus(hub="h:22", pid=1, connected=True, forwards_up=3))
    write_status(path, TunnelStatus(hub="h:22", pid=1, connected=False, last_error="x"))
    data = read_status(path)
    assert data["connected"] is False and data["last_error"] == "x"
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temp files left


def test_missing_status_file_is_one_line_error(tmp_path):
    with pytest.raises(SendenseError, match="is the tunnel running"):
        read_status(tmp_path / "nope.json")


def _status_cli(tmp_path, status: TunnelStatus, *extra: str):
    sfile = tmp_path / "status.json"
    write_status(sfile, status)
    cfg = tmp_path / "tunnel.toml"
    cfg.write_text(f'[status]\nfile = "{sfile}"\n')
    return CliRunner().invoke(tunnel, ["status", "--config", str(cfg), *extra])


def test_status_cli_connected_exits_0(tmp_path):
    st = TunnelStatus(hub="hub:22", pid=os.getpid(), connected=True, forwards_up=103)
    st.forwards_total = 103
    r = _status_cli(tmp_path, st, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["forwards_up"] == 103
    r = _status_cli(tmp_path, st)
    assert r.exit_code == 0 and "connected" in r.output and "103/103" in r.output


def test_status_cli_disconnected_exits_1_and_shows_the_error(tmp_path):
    st = TunnelStatus(hub="hub:22", pid=os.getpid(), last_error="Connection refused")
    st.backoff_seconds = 4.2
    r = _status_cli(tmp_path, st)
    assert r.exit_code == 1
    assert "not connected" in r.output and "Connection refused" in r.output and "4.2" in r.output


def test_status_cli_stale_file_of_dead_process_is_not_connected(tmp_path):
    st = TunnelStatus(hub="hub:22", pid=2**22 + 12345, connected=True)
    r = _status_cli(tmp_path, st, "--json")
    assert r.exit_code == 1
    assert json.loads(r.output)["connected"] is False


def test_slot_forwards_lead_to_this_node_s_sockets_by_default():
    cfg = parse_config({"hub": {"user": "sdt-site-a"}}, TunnelConfig)
    assert cfg.forwards.nbd_listen == "unix"
    assert cfg.slot_target(10100) == "/run/sendense/nbd/site-a/10100.sock"
    rendered = parse_config(
        {"forwards": {"nbd_socket_dir": "/srv/nbd/site-a/"}}, TunnelConfig
    )  # the role renders <hub socket_dir>/<node id>
    assert rendered.slot_target(10200) == "/srv/nbd/site-a/10200.sock"
    old = parse_config({"forwards": {"nbd_listen": "tcp"}}, TunnelConfig)
    assert old.slot_target(10100) == "127.0.0.1:10100"


def test_supervisor_forwards_every_slot_and_the_api_port():
    cfg = parse_config({"hub": {"user": "sdt-b"}}, TunnelConfig)
    targets = forward_targets(cfg)
    assert len(targets) == 102
    assert targets[10150].path == "/run/sendense/nbd/b/10150.sock"
    assert (targets[8082].path, targets[8082].port) == (None, 8082)
    old = forward_targets(parse_config({"forwards": {"nbd_listen": "tcp"}}, TunnelConfig))
    assert (old[10150].path, old[10150].port) == (None, 10150)


def test_a_relative_socket_dir_is_refused():
    with pytest.raises(ConfigError, match=r"forwards\.nbd_socket_dir"):
        parse_config({"forwards": {"nbd_socket_dir": "nbd/a"}}, TunnelConfig)
