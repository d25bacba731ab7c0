"""What names one vCenter: its URL's endpoint and the credentials and trust settings to use."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sendense_tools.errors import SendenseError


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
    # CA bundle to verify with instead of the system store (empty = the system store).
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
