"""How the backup's source transports inherit vCenter's trust, and the https snapshot rule."""

from __future__ import annotations

import ssl

import pytest

from sendense_tools.backup.sources import SourceError, curl_trust, refuse_other_snapshots
from sendense_tools.vsphere.params import Endpoint
from sendense_tools.vsphere.snapshots import SnapshotRef
from sendense_tools.vsphere.trust import Trust, ca_context, unverified_context

EP = Endpoint("vc", 443)
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_curl_gets_the_same_anchor_as_the_soap_session():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pinned = Trust("pinned", EP, ctx, anchor_pem=PEM, thumbprint="aa:" * 19 + "aa")
    assert curl_trust(pinned) == (True, PEM)
    assert curl_trust(Trust("ca", EP, ca_context(""), ca_file="/etc/vc-ca.pem")) == (
        "/etc/vc-ca.pem",
        None,
    )
    assert curl_trust(Trust("ca", EP, ca_context(""))) == (True, None)
    assert curl_trust(Trust("insecure", EP, unverified_context())) == (False, None)


def snap(name: str) -> SnapshotRef:
    return SnapshotRef(name, f"snapshot-{len(name)}", None)


def test_https_refuses_other_snapshots_by_name_and_points_to_vddk():
    with pytest.raises(SourceError) as err:
        refuse_other_snapshots("https", "web01", [snap("before-upgrade"), snap("veeam-tmp")])
    message = str(err.value)
    assert message.startswith("VM web01 already has snapshot(s) 'before-upgrade', 'veeam-tmp':")
    assert "--transport vddk" in message and "\n" not in message


def test_the_snapshot_rule_is_https_only_and_needs_another_snapshot():
    refuse_other_snapshots("https", "web01", [])
    refuse_other_snapshots("vddk", "web01", [snap("before-upgrade")])
    refuse_other_snapshots("file", "web01", [snap("before-upgrade")])
