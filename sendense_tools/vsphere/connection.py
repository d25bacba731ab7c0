"""A pyvmomi session to vCenter whose connections trust only what `trust` establishes.

pyvmomi silently skips verification for 127.0.0.1 when it is given no SSL
context, so a context is always passed explicitly: verification is off only
when the caller asked for `insecure` by name.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from sendense_tools.vsphere.params import Endpoint, VcenterParams, VsphereError, parse_vcenter_url
from sendense_tools.vsphere.trust import (
    Trust,
    establish_trust,
    fetch_peer_certificate,
    normalize_thumbprint,
    sha1_thumbprint,
)

# Callers import these from here, where sessions are made.
__all__ = [
    "Endpoint",
    "VcenterParams",
    "VsphereError",
    "VsphereSession",
    "fetch_peer_certificate",
    "normalize_thumbprint",
    "parse_vcenter_url",
    "sha1_thumbprint",
]

T = TypeVar("T")


class VsphereSession:
    """One logged-in pyvmomi service instance.

    The SOAP stub is not safe for concurrent use, so every call goes through
    `call()` which holds a lock; async code runs it in a worker thread.
    """

    def __init__(self, params: VcenterParams, si: vim.ServiceInstance, trust: Trust) -> None:
        self.params = params
        self.si = si
        self.trust = trust
        self.endpoint = trust.endpoint
        self.content = si.RetrieveContent()
        self._lock = threading.RLock()

    @classmethod
    def connect(cls, params: VcenterParams) -> VsphereSession:
        trust = establish_trust(params)
        ep = trust.endpoint
        try:
            si = SmartConnect(
                host=ep.host,
                port=ep.port,
                user=params.user,
                pwd=params.password,
                sslContext=trust.context,
                connectionPoolTimeout=-1,
            )
        except vim.fault.InvalidLogin:
            raise VsphereError(f"vCenter {ep.netloc}: incorrect user name or password") from None
        except ssl.SSLCertVerificationError as exc:
            raise trust.refusal("SOAP login", exc) from None
        except (OSError, ssl.SSLError) as exc:
            raise VsphereError(f"cannot reach vCenter at {ep.netloc}: {exc}") from None
        return cls(params, si, trust)

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self._lock:
            try:
                return fn(*args, **kwargs)
            except ssl.SSLCertVerificationError as exc:
                # pyvmomi opens new pooled connections at any time: each is anchored too.
                raise self.trust.refusal("SOAP", exc) from None

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
