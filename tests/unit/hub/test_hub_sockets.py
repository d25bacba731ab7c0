"""A hub started by hand creates a node's export directory the way tmpfiles would."""

from __future__ import annotations

import grp
import logging
import os

from sendense_tools.hub.sockets import ExportLayout, ensure_node_dir, remove_stale_sockets
from tests.fixtures.sshd import TEST_USER, ensure_test_user


def test_a_missing_node_directory_gets_2750_and_the_tunnel_user_s_group(tmp_path):
    ensure_test_user(TEST_USER)  # makes group sdt-a too
    directory = ensure_node_dir(tmp_path / "nbd", "a")
    st = directory.stat()
    assert oct(st.st_mode & 0o7777) == "0o2750"
    assert st.st_gid == grp.getgrnam(TEST_USER).gr_gid
    assert oct((tmp_path / "nbd").stat().st_mode & 0o777) == "0o755"


def test_without_the_group_it_keeps_the_hub_s_group_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        directory = ensure_node_dir(tmp_path, "no-such-node")
    assert directory.stat().st_gid == os.getgid()
    assert "no group sdt-no-such-node" in caplog.text


def test_an_existing_directory_is_left_as_the_role_made_it(tmp_path):
    (tmp_path / "a").mkdir(mode=0o750)
    ensure_node_dir(tmp_path, "a")
    assert oct((tmp_path / "a").stat().st_mode & 0o7777) == "0o750"


def test_addresses_per_layout_and_stale_sockets(tmp_path):
    unix = ExportLayout("unix", str(tmp_path), "127.0.0.1")
    address = unix.address("b", 10100)
    assert address.socket == tmp_path / "b" / "10100.sock"
    assert address.uri("e") == f"nbd+unix:///e?socket={tmp_path}/b/10100.sock"
    assert unix.target_host() == "127.0.0.1"
    tcp = ExportLayout("tcp", str(tmp_path), "127.0.0.9")
    assert tcp.address("b", 10100).uri("e") == "nbd://127.0.0.9:10100/e"
    assert tcp.target_host() == "127.0.0.9"
    (tmp_path / "b" / "10100.sock").touch()
    (tmp_path / "b" / "keep.txt").touch()
    assert remove_stale_sockets(tmp_path, ["b", "absent"]) == 1
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["keep.txt"]
