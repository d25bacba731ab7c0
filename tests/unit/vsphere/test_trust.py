"""The trust anchors of vCenter connections (sendense_tools.vsphere.trust), against real TLS
handshakes on loopback: a server whose certificate a CA (trusted by nobody here) signed."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sendense_tools.vsphere.params import Endpoint, VcenterParams, VsphereError
from sendense_tools.vsphere.trust import (
    establish_trust,
    fetch_certificate,
    pinned_context,
    sha1_thumbprint,
)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


@dataclass(frozen=True)
class Issued:
    pem: str
    key_pem: bytes


def _issue(ca_key, subject: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name("test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem)


@dataclass(frozen=True)
class Server:
    endpoint: Endpoint
    cert: Issued
    sibling: Issued  # another certificate from the same CA


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """A TLS server on loopback presenting a CA-signed leaf; it completes handshakes only."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf, sibling = _issue(ca_key, "vcenter"), _issue(ca_key, "vcenter")
    d: Path = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_text(leaf.pem)
    (d / "key.pem").write_bytes(leaf.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so that the loop sees `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield Server(Endpoint("127.0.0.1", listener.getsockname()[1]), leaf, sibling)
    stop.set()
    thread.join(5)
    listener.close()


def test_a_pinned_leaf_is_the_only_anchor_even_when_a_ca_signed_it(server):
    der = fetch_certificate(server.endpoint, pinned_context(server.cert.pem))
    assert der == ssl.PEM_cert_to_DER_cert(server.cert.pem)
    # The same CA's other certificate pinned: the server's is refused, CA or not.
    with pytest.raises(ssl.SSLCertVerificationError):
        fetch_certificate(server.endpoint, pinned_context(server.sibling.pem))


def test_a_wrong_pin_is_refused_on_the_probe_naming_both_thumbprints(server):
    wrong = sha1_thumbprint(ssl.PEM_cert_to_DER_cert(server.sibling.pem))
    params = VcenterParams(f"https://127.0.0.1:{server.endpoint.port}", "u", "p", thumbprint=wrong)
    with pytest.raises(VsphereError) as err:
        establish_trust(params)
    real = sha1_thumbprint(ssl.PEM_cert_to_DER_cert(server.cert.pem))
    assert "certificate thumbprint mismatch" in str(err.value)
    assert real in str(err.value) and wrong in str(err.value)


def test_a_matching_pin_anchors_the_context_on_that_certificate(server):
    real = sha1_thumbprint(ssl.PEM_cert_to_DER_cert(server.cert.pem))
    trust = establish_trust(
        VcenterParams(
            f"https://127.0.0.1:{server.endpoint.port}", "u", "p", thumbprint=real.upper()
        )
    )
    assert trust.mode == "pinned" and trust.thumbprint == real
    assert trust.anchor_pem.strip() == server.cert.pem.strip()
    assert trust.vddk_thumbprint() == real
    assert fetch_certificate(server.endpoint, trust.context)


def test_ca_mode_refuses_a_certificate_its_cas_did_not_sign(server, tmp_path):
    other_ca = tmp_path / "ca.pem"
    other_ca.write_text(server.sibling.pem)
    trust = establish_trust(
        VcenterParams(f"https://127.0.0.1:{server.endpoint.port}", "u", "p", ca_file=str(other_ca))
    )
    assert trust.mode == "ca"
    with pytest.raises(VsphereError, match="is not trusted on the VDDK thumbprint connection"):
        trust.vddk_thumbprint()


def test_a_missing_ca_file_is_one_clear_line(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(VsphereError, match=f"CA file {missing}: No such file"):
        establish_trust(VcenterParams("https://vc.example", "u", "p", ca_file=str(missing)))


def test_insecure_is_the_only_unverified_mode_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        trust = establish_trust(VcenterParams("https://vc.example:8443", "u", "p", insecure=True))
    assert trust.mode == "insecure" and trust.context.verify_mode == ssl.CERT_NONE
    assert [r.getMessage() for r in caplog.records] == [
        "warning: vCenter vc.example:8443: insecure mode (--insecure, [vcenter] insecure): its "
        "certificate is NOT verified; anyone on the path can read the password and the disks"
    ]
    verified = establish_trust(VcenterParams("https://vc.example", "u", "p"))
    assert verified.context.verify_mode == ssl.CERT_REQUIRED and verified.context.check_hostname


def test_insecure_with_a_pin_is_refused_not_silently_unpinned():
    both = VcenterParams("https://vc", "u", "p", thumbprint="aa:" * 19 + "aa", insecure=True)
    with pytest.raises(VsphereError, match="exclude each other"):
        establish_trust(both)
