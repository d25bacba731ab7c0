"""https_source against the vCenter simulator: a datastore file read with the session cookie.

The vSphere code needed here (log in, find the datastore's directory) stays in this test;
the product's vSphere module belongs to the backup helper.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect

from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.sources import SourceError, https_source
from tests.fixtures.ports import free_port
from tests.fixtures.procs import stop_process
from tests.integration.nbd_engine.servers import make_sparse_disk

VCSIM = Path(__file__).resolve().parents[3] / ".cache" / "bin" / "vcsim-lab"


@dataclass
class DatastoreFile:
    url: str
    cookie: str
    sha256: str
    size: int


@pytest.fixture(scope="module")
def datastore_file() -> Iterator[DatastoreFile]:
    workdir = Path(tempfile.mkdtemp(prefix="sendense-nbd-vcsim-"))
    (workdir / "tmp").mkdir()
    port = free_port()
    with open(workdir / "vcsim.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *(str(VCSIM), "-listen", f"127.0.0.1:{port}", "-tls=true"),
                *("-url-file", str(workdir / "url")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "TMPDIR": str(workdir / "tmp")},
        )
    try:
        deadline = time.monotonic() + 60
        while not ((workdir / "url").exists() and (workdir / "url").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "vcsim-lab did not start"
            time.sleep(0.05)
        si = SmartConnect(
            host="127.0.0.1", port=port, user="user", pwd="pass", disableSslCertValidation=True
        )
        try:
            dc = si.content.rootFolder.childEntity[0]
            ds = dc.datastore[0]
            local = Path(urlsplit(ds.info.url).path if "://" in ds.info.url else ds.info.url)
            name = "sendense-test/disk-flat.vmdk"
            (local / "sendense-test").mkdir(exist_ok=True)
            size = 24 << 20
            sha = make_sparse_disk(local / name, size, seed=9)
            cookie = si._stub.cookie.split(";")[0].strip()  # vmware_soap_session="..."
            assert cookie.startswith("vmware_soap_session=")
            url = (
                f"https://127.0.0.1:{port}/folder/{quote(name)}"
                f"?dcPath={quote(dc.name)}&dsName={quote(ds.name)}"
            )
            yield DatastoreFile(url, cookie, sha, size)
        finally:
            Disconnect(si)
    finally:
        stop_process(proc, timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_https_source_insecure_copies_bit_identical(datastore_file, make_target):
    target = make_target(datastore_file.size)
    async with https_source(datastore_file.url, datastore_file.cookie, verify=False) as src:
        result = await copy_disk("disk0", src, target.endpoint)
    assert result.sha256 == datastore_file.sha256
    # no extents over HTTPS: the holes are found by zero detection and not written
    assert result.bytes_copied < datastore_file.size * 0.7
    target.stop()
    assert target.sha256() == datastore_file.sha256


async def test_https_source_verifies_certificate_by_default(datastore_file):
    with pytest.raises(SourceError) as err:
        async with https_source(datastore_file.url, datastore_file.cookie):
            pass
    message = str(err.value)
    assert message.startswith("https source https://127.0.0.1:") and "certificate" in message
    assert datastore_file.cookie not in message and "\n" not in message
