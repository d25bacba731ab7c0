"""The lab simulator's certificate (files/vcsim): strong enough for OpenSSL's defaults, naming
its listen host, and kept across a restart so that a pinned thumbprint stays valid."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sendense_tools.vsphere.connection import (
    fetch_peer_certificate,
    parse_vcenter_url,
    sha1_thumbprint,
)
from tests.fixtures.vcsim import start_vcsim, stop_vcsim


def test_certificate_is_p256_for_the_listen_host_and_verifies_with_default_settings(vcsim):
    cert = x509.load_pem_x509_certificate(vcsim.cert_file.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # OpenSSL's default security level, host name checked: no "key too weak".
    ep = parse_vcenter_url(vcsim.url)
    ctx = ssl.create_default_context(cafile=str(vcsim.cert_file))
    with (
        socket.create_connection((ep.host, ep.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=ep.host) as tls,
    ):
        assert sha1_thumbprint(tls.getpeercert(binary_form=True)) == vcsim.thumbprint


def test_a_restarted_simulator_keeps_its_certificate(tmp_path):
    proc, url = start_vcsim(tmp_path)
    try:
        first = sha1_thumbprint(fetch_peer_certificate(parse_vcenter_url(url)))
        key_mode = (tmp_path / "key.pem").stat().st_mode & 0o777
    finally:
        stop_vcsim(proc)
    proc, url = start_vcsim(tmp_path)
    try:
        assert sha1_thumbprint(fetch_peer_certificate(parse_vcenter_url(url))) == first
    finally:
        stop_vcsim(proc)
    assert key_mode == 0o600
