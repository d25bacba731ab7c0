"""NBD target strings: the seed's forms, and bad input named in one line."""

from __future__ import annotations

import pytest

from sendense_tools.nbd.endpoint import (
    NbdEndpoint,
    TlsPsk,
    format_nbd_targets,
    parse_nbd_targets,
    targets_from_host_port,
)


def test_parse_targets_keeps_order_and_addresses():
    text = "disk0:nbd://127.0.0.1:10100/vm-a-disk0,disk1:nbd+unix:///e1?socket=/run/x.sock"
    targets = parse_nbd_targets(text)
    assert list(targets) == ["disk0", "disk1"]
    a = targets["disk0"].address
    assert (a.host, a.port, a.export, a.socket) == ("127.0.0.1", 10100, "vm-a-disk0", None)
    b = targets["disk1"].address
    assert (b.socket, b.export) == ("/run/x.sock", "e1")
    assert format_nbd_targets(targets) == text


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("disk0:nbd://127.0.0.1:10100/a,disk1", "disk1"),
        ("disk0:nbd://127.0.0.1:99999/a", "disk0:nbd://127.0.0.1:99999/a"),
        ("disk0:nbd://127.0.0.1:abc/a", "disk0:nbd://127.0.0.1:abc/a"),
        ("disk0:http://127.0.0.1:1/a", "disk0:http://127.0.0.1:1/a"),
        ("disk0:nbd:///a", "disk0:nbd:///a"),
        ("disk0:nbd://h:1/a,disk0:nbd://h:2/b", "disk0 given twice"),
        ("bad id:nbd://h:1/a", "'bad id'"),
        ("", "empty"),
        ("disk0:nbd+unix:///a", "socket=PATH"),
    ],
)
def test_bad_targets_name_the_bad_part(text, named):
    with pytest.raises(ValueError) as err:
        parse_nbd_targets(text)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_host_port_form_uses_consecutive_ports():
    targets = targets_from_host_port("127.0.0.1", 10100, ["disk0", "disk1"], ["e0", "e1"])
    assert [t.uri for t in targets.values()] == [
        "nbd://127.0.0.1:10100/e0",
        "nbd://127.0.0.1:10101/e1",
    ]
    assert targets_from_host_port("h", 10809, ["disk0"])["disk0"].address.export == ""
    with pytest.raises(ValueError, match="65535"):
        targets_from_host_port("h", 65535, ["disk0", "disk1"])


def test_tls_psk_is_validated_and_never_shown():
    psk = TlsPsk("sendense", "ab" * 32)
    assert "ab" * 32 not in repr(NbdEndpoint("nbd://h:1/e", psk))
    with pytest.raises(ValueError, match="hex"):
        TlsPsk("sendense", "xyz")
    with pytest.raises(ValueError, match="username"):
        TlsPsk("a:b", "ab")
