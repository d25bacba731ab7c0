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

import nbd
import pytest
from pyVim.connect import Disconnect, SmartConnect

from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.extents import extents
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
    path: Path  # the file in the simulator's datastore directory


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
            yield DatastoreFile(url, cookie, sha, size, local / name)
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


def data_areas(path: Path, size: int, grain: int = 64 << 10) -> list[tuple[int, int]]:
    """The grains of the file holding any non-zero byte, merged: what CBT's "*" reports."""
    areas: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        for offset in range(0, size, grain):
            if any(f.read(grain)):
                length = min(grain, size - offset)
                if areas and sum(areas[-1]) == offset:
                    areas[-1] = (areas[-1][0], areas[-1][1] + length)
                else:
                    areas.append((offset, length))
    return areas


async def test_https_source_with_allocated_areas_serves_the_rest_as_holes(
    datastore_file, make_target
):
    areas = data_areas(datastore_file.path, datastore_file.size)
    assert len(areas) > 1 and sum(n for _, n in areas) < datastore_file.size * 0.8
    target = make_target(datastore_file.size)
    async with https_source(
        datastore_file.url, datastore_file.cookie, verify=False, allocated=areas
    ) as src:
        handle = nbd.NBD()
        handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        handle.connect_uri(src.uri)
        try:
            mapped = list(extents(handle, 0, datastore_file.size))
        finally:
            handle.shutdown()
        result = await copy_disk("disk0", src, target.endpoint)
    data: list[tuple[int, int]] = []
    for offset, length, zero in mapped:
        if zero:
            continue
        if data and sum(data[-1]) == offset:
            data[-1] = (data[-1][0], data[-1][1] + length)
        else:
            data.append((offset, length))
    assert data == areas
    assert result.sha256 == datastore_file.sha256
    assert result.bytes_copied <= sum(n for _, n in areas)
    target.stop()
    assert target.sha256() == datastore_file.sha256
