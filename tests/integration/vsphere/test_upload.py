"""put_file against the simulator and against local TLS servers that misbehave on purpose."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendense_tools.vsphere.connection import VcenterParams, VsphereError
from sendense_tools.vsphere.datastore import probe_url
from sendense_tools.vsphere.params import Endpoint
from sendense_tools.vsphere.trust import Trust, establish_trust, pinned_context
from sendense_tools.vsphere.upload import UploadCancelled, put_file, upload_url
from tests.fixtures.tlsproxy import make_self_signed

MIB = 1 << 20
# Bounded waits: far above what the calls take, far below put_file's own socket timeout.
RETURN_WITHIN = 30.0
QUIET_FOR = 1.0


def test_a_put_stores_the_bytes_at_a_path_that_needs_quoting(session):
    url = upload_url(session.endpoint, "DC0", "[LocalDS_0] my dir/a b#1.bin")
    data = bytes(range(256)) * 4096
    chunks = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    put_file(session.trust, session.session_cookie(), url, len(data), chunks)
    req = urllib.request.Request(url, headers={"Cookie": session.session_cookie()})
    with urllib.request.urlopen(req, context=session.trust.context) as resp:
        assert resp.read() == data


def test_cancel_during_a_put_stops_it(session):
    url = upload_url(session.endpoint, "DC0", "[LocalDS_0] cancelled/big-flat.vmdk")
    cancel = threading.Event()
    drawn = 0

    def chunks() -> Iterator[bytes]:
        nonlocal drawn
        for _ in range(64):
            drawn += 1
            if drawn == 3:
                cancel.set()
            yield bytes(MIB)

    with pytest.raises(UploadCancelled, match=r"\[LocalDS_0\] cancelled/big-flat.vmdk"):
        put_file(session.trust, session.session_cookie(), url, 64 * MIB, chunks(), cancel)
    assert drawn == 3


def test_more_or_less_data_than_announced_is_an_error(session):
    url = upload_url(session.endpoint, "DC0", "[LocalDS_0] short/x.bin")
    with pytest.raises(VsphereError, match="2 bytes of data, 3 announced"):
        put_file(session.trust, session.session_cookie(), url, 3, [b"ab"])
    with pytest.raises(VsphereError, match="more data than its 3 bytes"):
        put_file(session.trust, session.session_cookie(), url, 3, [b"ab", b"cd"])


def test_an_unknown_datastore_is_a_404_naming_the_file(session):
    url = upload_url(session.endpoint, "DC0", "[NoSuchDS] x/y-flat.vmdk")
    with pytest.raises(VsphereError, match=r"\[NoSuchDS\] x/y-flat.vmdk.*HTTP 404"):
        put_file(session.trust, session.session_cookie(), url, 1, [b"x"])


def test_a_swapped_certificate_refuses_the_put_before_sending(vcsim, session, tls_proxy):
    proxy = tls_proxy(vcsim.url, relay_first=1)  # the pin's probe passes, the PUT is swapped
    trust = establish_trust(
        VcenterParams(proxy.url(), vcsim.user, vcsim.password, thumbprint=vcsim.thumbprint)
    )
    file = "[LocalDS_0] swapped/disk-flat.vmdk"
    cookie = session.session_cookie()
    url = upload_url(Endpoint("127.0.0.1", proxy.port), "DC0", file)
    with pytest.raises(VsphereError, match="on the datastore upload connection") as err:
        put_file(trust, cookie, url, 4, [b"data"])
    assert "\n" not in str(err.value)
    assert proxy.refused() == 1 and proxy.captured == b""  # not even the cookie
    direct = upload_url(session.endpoint, "DC0", file)
    assert probe_url(direct, cookie, session.trust) == 404


@contextlib.contextmanager
def tls_server(tmp_path: Path, handler=None) -> Iterator[tuple[int, Trust]]:
    """A local HTTPS server (its own certificate, pinned by the returned Trust).

    With `handler` an http.server handler class; without, a server that completes the
    TLS handshake and then never reads.
    """
    cert, key = make_self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def trust_of(port: int) -> Trust:
        anchor = pinned_context(cert.read_text())
        return Trust("pinned", Endpoint("127.0.0.1", port), anchor, thumbprint="x")

    if handler is not None:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1], trust_of(server.server_address[1])
        finally:
            server.shutdown()
            server.server_close()
        return
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            raw, _ = listener.accept()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            held.append(ctx.wrap_socket(raw, server_side=True))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], trust_of(listener.getsockname()[1])
    finally:
        listener.close()
        for s in held:
            s.close()


def test_cancel_unblocks_a_put_the_server_stopped_reading(tmp_path):
    cancel = threading.Event()
    last_yield = [time.monotonic()]
    outcome: list[BaseException | None] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(1024):
            last_yield[0] = time.monotonic()
            yield bytes(MIB)

    with tls_server(tmp_path) as (port, trust):
        url = f"https://127.0.0.1:{port}/folder/x-flat.vmdk?dcPath=DC0&dsName=ds"

        def run() -> None:
            try:
                put_file(trust, "c=1", url, 1024 * MIB, chunks(), cancel, timeout=600)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        # The send is blocked once no chunk has been drawn for a while.
        deadline = time.monotonic() + RETURN_WITHIN
        while time.monotonic() - last_yield[0] < QUIET_FOR and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.is_alive(), f"the PUT ended before the server stopped it: {outcome}"
        cancel.set()
        worker.join(RETURN_WITHIN)
        assert not worker.is_alive(), f"put_file still blocked {RETURN_WITHIN:.0f} s after cancel"
    assert isinstance(outcome[0], UploadCancelled), outcome


class Refusing(http.server.BaseHTTPRequestHandler):
    """Answers a PUT of /folder/<status>/... with that status, after reading the body."""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(int(self.path.split("/")[2]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "refused the upload"), (403, "refused the upload"), (500, "failed to store"),
     (503, "failed to store"), (409, "answered HTTP 409")],
)  # fmt: skip
def test_http_errors_are_one_line_naming_the_file(tmp_path, status, says):
    with tls_server(tmp_path, Refusing) as (port, trust):
        url = f"https://127.0.0.1:{port}/folder/{status}/vm_disk0-flat.vmdk?dcPath=DC0&dsName=ds1"
        with pytest.raises(VsphereError) as err:
            put_file(trust, "c=1", url, 5, [b"hello"])
    message = str(err.value)
    assert f"[ds1] {status}/vm_disk0-flat.vmdk" in message and says in message
    assert f"HTTP {status}" in message and "\n" not in message


class RefusingAtOnce(http.server.BaseHTTPRequestHandler):
    """Refuses a PUT with 401 before reading its body, and closes, as a proxy may."""

    def do_PUT(self) -> None:
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_refusal_before_the_body_is_read_names_the_status(tmp_path):
    with tls_server(tmp_path, RefusingAtOnce) as (port, trust):
        url = f"https://127.0.0.1:{port}/folder/vm/vm_disk0-flat.vmdk?dcPath=DC0&dsName=ds1"
        with pytest.raises(VsphereError) as err:
            put_file(trust, "c=1", url, 256 * MIB, (bytes(MIB) for _ in range(256)))
    message = str(err.value)
    assert "refused the upload of [ds1] vm/vm_disk0-flat.vmdk (HTTP 401" in message
