"""SHA-256 of guest content: equals sha256sum of the raw image, with and without TLS."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import nbd
import pytest

from sendense_tools.nbd.digest import DigestError, sha256_of_image, sha256_of_nbd
from tests.fixtures.ports import free_port


def raw_sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_qcow2(tmp_path, size="64M"):
    image = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), size], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 5M", "-c",
                    "write -P 0 20M 1M", "-c", "write -P 0x7 63M 1M", str(image)],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    raw = tmp_path / "d.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    return image, raw


def test_image_digest_matches_the_raw_content(tmp_path):
    image, raw = make_qcow2(tmp_path)
    assert sha256_of_image(image) == raw_sha(raw)
    assert sha256_of_image(raw, fmt="raw") == raw_sha(raw)


def test_missing_or_broken_image_is_a_one_line_error(tmp_path):
    with pytest.raises(DigestError, match="does not exist"):
        sha256_of_image(tmp_path / "nope.qcow2")
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"not qcow2" * 100)
    with pytest.raises(DigestError, match="qemu-nbd cannot serve"):
        sha256_of_image(junk)


def test_nbd_digest_with_the_fixture_target(qemu_nbd_target):
    target = qemu_nbd_target(8 * 1024 * 1024)
    handle = nbd.NBD()
    handle.connect_uri(target.uri)
    data = os.urandom(65536)
    handle.pwrite(data, 4096)
    handle.flush()
    handle.shutdown()
    expected = hashlib.sha256(bytes(4096) + data + bytes(8 * 1024 * 1024 - 4096 - 65536))
    assert sha256_of_nbd(target.uri) == expected.hexdigest()


def test_nbd_digest_over_tls_psk(tmp_path):
    image, raw = make_qcow2(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    tls = {"username": "u1", "psk": os.urandom(32).hex()}
    (keys / "keys.psk").write_text(f"{tls['username']}:{tls['psk']}\n")
    port = free_port()
    proc = subprocess.Popen(
        ["qemu-nbd", "--persistent", "-b", "127.0.0.1", "-p", str(port), "-x", "e", "-f", "qcow2",
         "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={keys}", "--tls-creds", "tls0",
         str(image)]
    )  # fmt: skip
    try:
        uri = f"nbd://127.0.0.1:{port}/e"
        for _ in range(400):
            try:
                digest = sha256_of_nbd(uri, tls)
                break
            except DigestError:
                assert proc.poll() is None
                time.sleep(0.05)
        assert digest == raw_sha(raw)
        with pytest.raises(DigestError, match="cannot connect"):
            sha256_of_nbd(uri)
    finally:
        proc.terminate()
        proc.wait()
