"""sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET.

Used by daemons run as systemd `Type=notify` units; outside systemd (no
NOTIFY_SOCKET) every call is a no-op, so the same code runs in tests.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send `lines` (e.g. "READY=1", "STATUS=...") to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not lines:
        return False
    # A leading "@" names a socket in the abstract namespace.
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when off.

    WATCHDOG_PID, when set, must name this process: the watchdog is meant for it alone.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2
