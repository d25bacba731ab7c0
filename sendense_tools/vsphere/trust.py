"""What every connection to one vCenter trusts: a pinned certificate, CAs, or (asked for) nothing.

A thumbprint is checked on a probe that sends nothing; the certificate that probe
returned then becomes the only trust anchor of each connection that carries a
credential or disk data (SOAP, datastore probes, nbdkit curl). A server, or a
proxy, that presents another certificate after the probe is refused on that
connection, before anything is sent. A pinned SHA-1 alone cannot be handed to
OpenSSL or curl; the certificate it names can.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from sendense_tools.vsphere.params import (
    Endpoint,
    VcenterParams,
    VsphereError,
    parse_vcenter_url,
)

log = logging.getLogger(__name__)

Mode = Literal["pinned", "ca", "insecure"]


def normalize_thumbprint(text: str) -> str:
    hexdigits = text.replace(":", "").strip().lower()
    if len(hexdigits) != 40 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise VsphereError(f"thumbprint {text!r} is not a SHA-1 in colon hex (xx:xx:...:xx)")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 40, 2))


def sha1_thumbprint(der: bytes) -> str:
    return normalize_thumbprint(hashlib.sha1(der).hexdigest())


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pinned_context(pem: str) -> ssl.SSLContext:
    """A context whose only trust anchor is the certificate `pem`.

    No CA store is loaded; partial-chain verification accepts the pinned
    certificate itself as the anchor, also when a CA (not trusted here) signed
    it. The pin is the identity, so the host name is not checked: vCenters are
    often reached by an address their certificate does not name.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cadata=pem)
    return ctx


def ca_context(ca_file: str) -> ssl.SSLContext:
    """Host name and chain checked against `ca_file`, or the system store when it is empty."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise VsphereError(f"CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None


def fetch_certificate(ep: Endpoint, context: ssl.SSLContext, timeout: float = 15.0) -> bytes:
    """The certificate (DER) `ep` presents on a connection made with `context`; sends no data."""
    try:
        with (
            socket.create_connection((ep.host, ep.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=ep.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError:
        raise
    except OSError as exc:
        raise VsphereError(f"cannot reach vCenter at {ep.netloc}: {exc}") from None
    if not der:
        raise VsphereError(f"vCenter at {ep.netloc} presented no certificate")
    return der


def fetch_peer_certificate(ep: Endpoint, timeout: float = 15.0) -> bytes:
    """The server's certificate (DER), read without verifying it: only to compare with a pin."""
    return fetch_certificate(ep, unverified_context(), timeout)


@dataclass(frozen=True)
class Trust:
    mode: Mode
    endpoint: Endpoint
    # For every Python connection (SOAP, datastore probes).
    context: ssl.SSLContext
    # pinned: the pinned certificate (PEM), the only anchor nbdkit curl may use.
    anchor_pem: str = ""
    # ca: the user's CA bundle; "" = the system store.
    ca_file: str = ""
    # pinned: the pin, normalised.
    thumbprint: str = ""

    def refusal(self, what: str, exc: ssl.SSLCertVerificationError) -> VsphereError:
        """The one-line error for a certificate refused on the `what` connection."""
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        where = f"vCenter {self.endpoint.netloc}"
        if self.mode == "pinned":
            return VsphereError(
                f"{where}: certificate thumbprint mismatch on the {what} connection: it presented "
                f"a certificate other than the pinned {self.thumbprint} ({reason}); "
                "nothing was sent"
            )
        return VsphereError(
            f"{where} certificate is not trusted on the {what} connection ({reason}); "
            "pin it with a thumbprint or install its CA"
        )

    def vddk_thumbprint(self) -> str:
        """The SHA-1 VDDK checks on its own connections.

        CA mode has no pin: it is taken from a connection verified against the
        CAs (host name included), never from an unverified one.
        """
        if self.mode == "pinned":
            return self.thumbprint
        try:
            return sha1_thumbprint(fetch_certificate(self.endpoint, self.context))
        except ssl.SSLCertVerificationError as exc:
            raise self.refusal("VDDK thumbprint", exc) from None


def establish_trust(params: VcenterParams) -> Trust:
    """Check the pin (if any) on a probe and return what the real connections must trust."""
    ep = parse_vcenter_url(params.url)
    if params.insecure and params.thumbprint:
        # Which one was meant cannot be guessed: skipping the pin would be silent.
        raise VsphereError("vCenter: insecure and a pinned thumbprint exclude each other")
    if params.insecure:
        log.warning(
            "warning: vCenter %s: insecure mode (--insecure, [vcenter] insecure): its "
            "certificate is NOT verified; anyone on the path can read the password and the disks",
            ep.netloc,
        )
        return Trust("insecure", ep, unverified_context())
    if params.thumbprint:
        want = normalize_thumbprint(params.thumbprint)
        der = fetch_peer_certificate(ep)
        got = sha1_thumbprint(der)
        if got != want:
            raise VsphereError(
                f"vCenter {ep.netloc}: certificate thumbprint mismatch: it presented {got}, "
                f"not the pinned {want}"
            )
        pem = ssl.DER_cert_to_PEM_cert(der)
        return Trust("pinned", ep, pinned_context(pem), anchor_pem=pem, thumbprint=want)
    return Trust("ca", ep, ca_context(params.ca_file), ca_file=params.ca_file)
