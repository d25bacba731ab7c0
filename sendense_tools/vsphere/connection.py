"""A pyvmomi session to vCenter with certificate verification or a pinned thumbprint.

pyvmomi silently skips verification for 127.0.0.1 when it is given no SSL
context, so a context is always passed explicitly: verification is off only
when the caller asked for `insecure` by name.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from sendense_tools.errors import SendenseError

T = TypeVar("T")


class VsphereError(SendenseError):
    """vCenter refused or failed an operation."""


@dataclass(frozen=True)
class VcenterParams:
    url: str
    user: str
    password: str
    # SHA-1 (colon hex, case-insensitive) of the server certificate; empty = verify with CAs.
    thumbprint: str = ""
    insecure: bool = False
    # Extra CA bundle for verification (empty = the system store).
    ca_file: str = ""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def parse_vcenter_url(url: str) -> Endpoint:
    """Accept "https://host[:port][/sdk]" or a bare host name."""
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise VsphereError(f"vCenter URL {url!r} must use https")
    if not parts.hostname:
        raise VsphereError(f"vCenter URL {url!r} has no host")
    try:
        port = parts.port or 443
    except ValueError:
        raise VsphereError(f"vCenter URL {url!r} has an invalid port") from None
    return Endpoint(parts.hostname, port)


def normalize_thumbprint(text: str) -> str:
    hexdigits = text.replace(":", "").strip().lower()
    if len(hexdigits) != 40 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise VsphereError(f"thumbprint {text!r} is not a SHA-1 in colon hex (xx:xx:...:xx)")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 40, 2))


def fetch_peer_certificate(ep: Endpoint, timeout: float = 15.0) -> bytes:
    """The server's certificate (DER), read without verifying it: only for pinning."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((ep.host, ep.port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=ep.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise VsphereError(f"cannot reach vCenter at {ep.netloc}: {exc}") from None
    if not der:
        raise VsphereError(f"vCenter at {ep.netloc} presented no certificate")
    return der


def sha1_thumbprint(der: bytes) -> str:
    return normalize_thumbprint(hashlib.sha1(der).hexdigest())


def verify_pinned(ep: Endpoint, thumbprint: str) -> bytes:
    """Check the server presents the pinned certificate; return it (DER)."""
    want = normalize_thumbprint(thumbprint)
    der = fetch_peer_certificate(ep)
    got = sha1_thumbprint(der)
    if got != want:
        raise VsphereError(
            f"vCenter {ep.netloc} certificate thumbprint {got} does not match the pinned {want}"
        )
    return der


def ssl_context(params: VcenterParams) -> ssl.SSLContext:
    if params.insecure or params.thumbprint:
        # Thumbprint mode: the identity check is the pin, done before connecting.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=params.ca_file or None)


class VsphereSession:
    """One logged-in pyvmomi service instance.

    The SOAP stub is not safe for concurrent use, so every call goes through
    `call()` which holds a lock; async code runs it in a worker thread.
    """

    def __init__(self, params: VcenterParams, si: vim.ServiceInstance, endpoint: Endpoint) -> None:
        self.params = params
        self.si = si
        self.endpoint = endpoint
        self.content = si.RetrieveContent()
        self._lock = threading.RLock()

    @classmethod
    def connect(cls, params: VcenterParams) -> VsphereSession:
        ep = parse_vcenter_url(params.url)
        if params.thumbprint and not params.insecure:
            verify_pinned(ep, params.thumbprint)
        try:
            si = SmartConnect(
                host=ep.host,
                port=ep.port,
                user=params.user,
                pwd=params.password,
                sslContext=ssl_context(params),
                connectionPoolTimeout=-1,
            )
        except vim.fault.InvalidLogin:
            raise VsphereError(f"vCenter {ep.netloc}: incorrect user name or password") from None
        except ssl.SSLCertVerificationError as exc:
            raise VsphereError(
                f"vCenter {ep.netloc} certificate is not trusted ({exc.verify_message}); "
                "pin it with a thumbprint or install its CA"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise VsphereError(f"cannot reach vCenter at {ep.netloc}: {exc}") from None
        return cls(params, si, ep)

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self._lock:
            return fn(*args, **kwargs)

    def session_cookie(self) -> str:
        """ "vmware_soap_session=<id>", valid for /folder downloads while the session lives."""
        raw = self.si._stub.cookie or ""
        first = raw.split(";", 1)[0].strip()
        if not first:
            raise VsphereError("vCenter session has no cookie")
        return first

    def keepalive(self) -> None:
        """Any call resets vCenter's idle timer, keeping the cookie valid for long copies."""
        self.call(self.si.CurrentTime)

    def close(self) -> None:
        try:
            with self._lock:
                Disconnect(self.si)
        except Exception:  # logging out of a dead session is not an error for us
            pass
