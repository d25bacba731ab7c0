"""nbdkit serving a disk on a unix socket in a private temp dir: the read-only source
transports, and a restore's vddk target (the one writable export).

Each transport is an async context manager yielding the NbdEndpoint to copy from; nbdkit is
stopped and the directory (socket, secrets, log) removed on exit. nbdkit runs with
--exit-with-parent so a killed node leaves nothing behind either. Secrets (cookie, password)
are handed over in 0600 files with nbdkit's `key=+FILE` syntax, never on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import nbd

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.connect import close_handle, describe
from sendense_tools.nbd.curl import nbdkit_curl_args, nbdkit_extentlist_args, write_extentlist
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.process import describe_exit

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# How long a failed probe waits to learn whether nbdkit itself exited.
EXIT_NOTICE = 0.2


class SourceError(SendenseError):
    """A source could not be served; one line naming the transport and nbdkit's reason."""


@dataclass(frozen=True)
class VddkArgs:
    server: str  # vCenter or ESXi host name
    user: str
    password_file: str
    thumbprint: str  # SHA-1 of the server certificate, colon hex
    vm_moref: str  # "vm-123"
    # "snapshot-7": read the disk as of this snapshot. None: write the VM's own disk
    # (a restore into a new, powered-off VM; VDDK writes only without a snapshot).
    snapshot_moref: str | None
    file: str  # "[datastore1] vm/vm.vmdk": the snapshot's base disk, or the disk to write
    libdir: str  # where VMware's VDDK is unpacked (contains lib64/)
    transports: str = "nbdssl:nbd"
    port: int | None = None  # vCenter's HTTPS port when not 443


def nbdkit_vddk_args(args: VddkArgs) -> list[str]:
    """Plugin and filters for nbdkit vddk, after the common options.

    VDDK does not allow multi-conn and NFC runs out of memory on large requests (virt-v2v
    forces the same): one connection, requests of at most 2 MiB (writes too), and, for
    reads, cached extents because QueryAllocatedBlocks is slow on big disks.
    """
    reading = args.snapshot_moref is not None
    out = [
        *(["--filter=cacheextents"] if reading else []),
        "--filter=multi-conn",
        "--filter=blocksize",
        "vddk",
        f"server={args.server}",
        f"user={args.user}",
        f"password=+{args.password_file}",
        f"thumbprint={args.thumbprint}",
        f"vm=moref={args.vm_moref}",
        *([f"snapshot={args.snapshot_moref}"] if reading else []),
        f"transports={args.transports}",
        f"libdir={args.libdir}",
        f"file={args.file}",
        "multi-conn-mode=disable",
        "maxdata=2M",
    ]
    if args.port is not None:
        out.append(f"port={args.port}")
    return out


def nbdkit_file_args(path: str) -> list[str]:
    return ["file", f"file={path}"]


def _write_secret(directory: Path, name: str, value: str) -> str:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return str(path)


def _last_error(log: Path) -> str:
    """nbdkit's most telling line: its last error, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        return ""
    lines = [line for line in lines if line]
    errors = [line for line in lines if "error" in line.lower()]
    line = (errors or lines or [""])[-1]
    return line.removeprefix("nbdkit: ")


def _probe(endpoint: NbdEndpoint) -> None:
    """Open the export once so that a source that cannot serve fails here, clearly."""
    h = nbd.NBD()
    try:
        h.connect_unix(endpoint.address.socket)
        h.get_size()
    finally:
        close_handle(h)


async def _in_thread(fn: Callable[[], None], unblock: Callable[[], None]) -> None:
    """Run a blocking call on a short-lived thread (not the loop's shared executor).

    Cancelled, it calls `unblock` (which must make `fn` return soon) and only then
    joins: joining a thread still blocked in `fn` would freeze the event loop.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        outcome: BaseException | None = None
        try:
            fn()
        except BaseException as e:
            outcome = e
        loop.call_soon_threadsafe(_settle, future, outcome)

    thread = threading.Thread(target=run, name="nbd-probe")
    thread.start()
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        unblock()
        with contextlib.suppress(BaseException):
            await future
        raise
    finally:
        thread.join()  # it has settled the future: this is a moment


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def _gone(what: str, proc: asyncio.subprocess.Process, log: Path) -> str | None:
    """Why the nbdkit serving `what` is no longer there (None while it runs)."""
    if proc.returncode is None:
        return None
    reason = _last_error(log)
    return f"{what}: nbdkit {describe_exit(proc.returncode)}" + (f" ({reason})" if reason else "")


def _private_dir(build: Callable[[Path], list[str]]) -> tuple[Path, list[str], int]:
    """The 0700 directory with nbdkit's secrets, its arguments, and a log file descriptor."""
    directory = Path(tempfile.mkdtemp(prefix="sendense-src-"))
    try:
        directory.chmod(0o700)
        args = build(directory)
        log_fd = os.open(directory / "nbdkit.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory, args, log_fd


def nbdkit_argv(sock: Path, pidfile: Path, plugin_args: list[str], readonly: bool) -> list[str]:
    """nbdkit's whole command line, serving on `sock`; `readonly` is its -r."""
    return [
        "nbdkit",
        "--foreground",
        "--exit-with-parent",
        *(["--readonly"] if readonly else []),
        "--unix",
        str(sock),
        "--pidfile",
        str(pidfile),
        *plugin_args,
    ]


@asynccontextmanager
async def _serve(
    what: str, build: Callable[[Path], list[str]], probe: bool = True, readonly: bool = True
) -> AsyncIterator[NbdEndpoint]:
    directory, args, log_fd = _private_dir(build)
    sock = directory / "nbd.sock"
    log = directory / "nbdkit.log"
    # nbdkit writes its PID file only once the socket listens; the socket file
    # itself appears at bind(), a moment before a connect() is accepted.
    pidfile = directory / "nbdkit.pid"
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *nbdkit_argv(sock, pidfile, args, readonly),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_fd,
            )
        finally:
            os.close(log_fd)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not pidfile.exists():
            if proc.returncode is not None:
                raise SourceError(f"{what}: nbdkit exited: {_last_error(log)}")
            if loop.time() > deadline:
                raise SourceError(f"{what}: nbdkit did not start in {START_TIMEOUT:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.02)
        endpoint = NbdEndpoint(
            f"nbd+unix:///?socket={sock}", server_gone=lambda: _gone(what, proc, log)
        )
        if probe:
            try:
                await _in_thread(lambda: _probe(endpoint), proc.kill)
            except nbd.Error as e:
                # An nbdkit that died makes the probe fail first: name that, not the URL.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), EXIT_NOTICE)
                gone = _gone(what, proc, log)
                raise SourceError(gone or f"{what}: {_last_error(log) or describe(e)}") from None
        yield endpoint
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def file_source(path: str, fmt: Literal["raw"] = "raw") -> contextlib.AbstractAsyncContextManager:
    """A local raw (or vmdk-flat, which is raw) file."""
    if fmt != "raw":
        raise ValueError(f"file source format {fmt!r}: only raw (vmdk-flat is raw)")
    if not os.path.isfile(path):
        raise SourceError(f"file source {path}: no such file")
    return _serve(f"file source {path}", lambda _d: nbdkit_file_args(os.path.abspath(path)))


def https_source(
    url: str,
    cookie: str | None = None,
    verify: bool | str = True,
    timeout: int | None = None,
    anchor_pem: str | None = None,
    allocated: list[tuple[int, int]] | None = None,
) -> contextlib.AbstractAsyncContextManager:
    """A file over HTTPS, e.g. a vCenter datastore file with its session cookie
    ('vmware_soap_session="..."').

    `allocated`: the (offset, length) areas that hold data; the source then reports
    every other byte as a hole, which a copy does not read. None: all of it is data.

    verify=False only when insecure mode was asked for; a path (a CA file) or
    `anchor_pem` (a pinned certificate) is then the only trust anchor. curl also
    checks that the certificate names the URL's host, with a CA or a pin alike
    (nbdkit 1.32 has no switch for that check alone).
    """
    if anchor_pem is not None and verify is False:
        raise ValueError("a pinned certificate and verify=False exclude each other")
    nbdkit_curl_args(url, None, verify, timeout)  # a bad URL fails here, before nbdkit starts
    shown = urlsplit(url)._replace(query="", fragment="").geturl()

    def build(directory: Path) -> list[str]:
        cookie_file = _write_secret(directory, "cookie", cookie) if cookie else None
        anchor = verify
        if anchor_pem is not None:
            anchor = _write_secret(directory, "anchor.pem", anchor_pem)
        capath = None
        if isinstance(anchor, str):
            capath = str(directory / "no-capath")
            os.mkdir(capath, 0o700)
        extents = None
        if allocated is not None:
            extents = write_extentlist(directory / "extents", allocated)
        filters, params = nbdkit_extentlist_args(extents)
        return [*filters, *nbdkit_curl_args(url, cookie_file, anchor, timeout, capath), *params]

    return _serve(f"https source {shown}", build)


def vddk_source(args: VddkArgs) -> contextlib.AbstractAsyncContextManager:
    """A snapshot's disk through VMware's VDDK (nbdkit vddk; needs the user's VDDK), read-only."""
    if args.snapshot_moref is None:
        raise ValueError("a vddk source reads a snapshot: snapshot_moref is required")
    return _serve(
        f"vddk source {args.file} of {args.vm_moref} on {args.server}",
        lambda _d: nbdkit_vddk_args(args),
    )


def vddk_target(args: VddkArgs) -> contextlib.AbstractAsyncContextManager:
    """A restored VM's disk, writable, through VMware's VDDK (nbdkit vddk without -r).

    The VM must be powered off and the disk created beforehand (thin: it reads as zeroes,
    so a restore writes only the data extents).
    """
    if args.snapshot_moref is not None:
        raise ValueError("a vddk target writes the VM's own disk: no snapshot_moref")
    return _serve(
        f"vddk target {args.file} of {args.vm_moref} on {args.server}",
        lambda _d: nbdkit_vddk_args(args),
        readonly=False,
    )
