"""TunnelForwards: a start request may name only this node's tunnel forwards."""

from __future__ import annotations

import pytest

from sendense_tools.nbd.endpoint import TlsPsk, parse_nbd_targets
from sendense_tools.node.forwards import TargetRefused, TunnelForwards

FORWARDS = TunnelForwards("127.0.0.2", (10100, 10200))


def test_a_forward_is_reached_on_the_tunnels_address():
    targets = parse_nbd_targets("disk0:nbd://127.0.0.1:10100/a,disk1:nbd://127.0.0.2:10200/b")
    routed = FORWARDS.route_all(targets)
    assert {d: t.uri for d, t in routed.items()} == {
        "disk0": "nbd://127.0.0.2:10100/a",
        "disk1": "nbd://127.0.0.2:10200/b",
    }


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("nbd://192.0.2.1:10100/a", "host 192.0.2.1 is not this node's tunnel"),
        ("nbd://hub.example:10100/a", "host hub.example is not this node's tunnel"),
        ("nbd://[2001:db8::1]:10100/a", "host 2001:db8::1 is not this node's tunnel"),
        ("nbd://127.0.0.1:10099/a", "port 10099 is outside the tunnel's NBD ports 10100-10200"),
        ("nbd://127.0.0.1:10201/a", "port 10201 is outside"),
        ("nbd://127.0.0.1/a", "port 10809 is outside"),
        ("nbd+unix:///a?socket=/run/x.sock", "not a TCP target"),
    ],
)
def test_anything_else_is_refused_naming_the_target(target, why):
    targets = parse_nbd_targets(f"disk0:nbd://127.0.0.1:10100/ok,disk1:{target}")
    with pytest.raises(TargetRefused) as exc:
        FORWARDS.route_all(targets)
    message = str(exc.value)
    assert f"disk1:{target}" in message and why in message
    assert "nbd://127.0.0.2:10100-10200/EXPORT" in message


def test_tls_credentials_stay_with_the_target():
    tls = TlsPsk("u", "ab" * 16)
    routed = FORWARDS.route_all(parse_nbd_targets("disk0:nbd://127.0.0.1:10150/a", tls))
    assert routed["disk0"].tls == tls
