"""Open libnbd handles for an NbdEndpoint, interruptibly, and classify what went wrong."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import time
from pathlib import Path

import nbd

from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk

CONNECT_TIMEOUT = 30.0

# Errors that mean "the path to the server went away": a tunnel outage or a restarted server.
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ENOTCONN,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.ESHUTDOWN,
    errno.EAGAIN,
}


class Stopped(Exception):
    """The copy was asked to stop while this thread was waiting."""


class NbdFailure(Exception):
    """One NBD operation failed; `transient` says whether reconnecting may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def describe(e: nbd.Error) -> str:
    """libnbd's message without the API-name prefix ("nbd_poll: recv: ..." -> "recv: ...")."""
    text = e.string or str(e)
    head, sep, rest = text.partition(": ")
    if sep and head.startswith("nbd_"):
        text = rest
    return text


def connect_failure(endpoint: NbdEndpoint, e: nbd.Error) -> NbdFailure:
    """Whether a failed connect is worth retrying: a refused, reset or closed connection is;
    a TLS failure, a missing export or a bad option is a configuration error."""
    text = describe(e)
    lowered = text.lower()
    permanent = (
        "tls" in lowered
        or "psk" in lowered
        or "no export" in lowered
        or e.errnum in (errno.ENOTSUP, errno.EINVAL)
    )
    missing_socket = e.errnum == errno.ENOENT and lowered.startswith("connect:")
    transient = not permanent and (
        e.errnum in _TRANSIENT_ERRNOS
        or missing_socket  # a unix socket of a server being restarted
        or "disconnected" in lowered
        or e.errnum in (0, None)
    )
    return NbdFailure(f"cannot connect to {endpoint.uri}: {text}", transient)


def io_failure(what: str, handle: nbd.NBD, errnum: int) -> NbdFailure:
    """A command finished with an error: transient when the connection died under it."""
    dead = handle.aio_is_dead() or handle.aio_is_closed()
    reason = os.strerror(errnum) if errnum else "failed"
    return NbdFailure(f"{what}: {reason}", dead or errnum in _TRANSIENT_ERRNOS)


class PskFile:
    """The PSK as a 0600 file in a private temp dir (libnbd reads keys from a file only)."""

    def __init__(self, tls: TlsPsk) -> None:
        self._dir = tempfile.mkdtemp(prefix="sendense-psk-")
        self.path = str(Path(self._dir) / "keys.psk")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{tls.username}:{tls.psk_hex}\n")

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self._dir)


def close_handle(handle: nbd.NBD | None) -> None:
    """Close now rather than whenever the garbage collector gets to it (frees the socket)."""
    if handle is not None and hasattr(handle, "_o"):
        handle.__del__()
        del handle._o


def open_handle(
    endpoint: NbdEndpoint,
    stop: threading.Event,
    *,
    psk_file: str | None = None,
    allocation: bool = False,
    timeout: float = CONNECT_TIMEOUT,
) -> nbd.NBD:
    """A connected handle; raises NbdFailure or Stopped. Polls so a stop request or a
    server that accepts but never answers cannot hang the caller."""
    addr = endpoint.address
    h = nbd.NBD()
    try:
        if allocation:
            h.add_meta_context("base:allocation")
        h.set_export_name(addr.export)
        if endpoint.tls is not None:
            if psk_file is None:
                raise ValueError("a TLS endpoint needs a PSK file")
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_username(endpoint.tls.username)
            h.set_tls_psk_file(psk_file)
        if addr.socket is not None:
            h.aio_connect_unix(addr.socket)
        else:
            h.aio_connect_tcp(addr.host, str(addr.port))
        deadline = time.monotonic() + timeout
        while h.aio_is_connecting():
            if stop.is_set():
                raise Stopped()
            if time.monotonic() > deadline:
                raise NbdFailure(
                    f"cannot connect to {endpoint.uri}: no answer in {timeout:.0f} s", True
                )
            h.poll(100)
        if not h.aio_is_ready():
            raise NbdFailure(f"cannot connect to {endpoint.uri}: handshake failed", True)
        return h
    except nbd.Error as e:
        close_handle(h)
        raise connect_failure(endpoint, e) from None
    except BaseException:
        close_handle(h)
        raise
