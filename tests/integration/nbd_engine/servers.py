"""Servers for the copy-engine tests: a sparse source disk, nbdkit sources (plain or with
filters such as rate) and restartable qemu-nbd qcow2 targets, all on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk
from tests.fixtures.ports import port_is_listening

DISK_SIZE = 96 << 20


def make_sparse_disk(path: Path, size: int, seed: int) -> str:
    """Random data extents, holes, and a data extent that is all zeros; returns its SHA-256
    computed by hashlib over the file itself."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            length = min(size - pos, rng.randrange(1, 64) * (64 << 10) + rng.randrange(0, 4096))
            kind = rng.random()
            f.seek(pos)
            if kind < 0.5:
                f.write(rng.randbytes(length))
            elif kind < 0.6:
                f.write(bytes(length))  # allocated, but zeros: found by zero detection
            pos += length
        f.seek(size - 7)
        f.write(b"the end")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SourceDisk:
    path: Path
    size: int
    sha256: str


def _wait_socket(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server for {path} did not start")
        time.sleep(0.02)


@contextlib.contextmanager
def nbdkit_file(path: Path, workdir: Path, *filters: str) -> Iterator[NbdEndpoint]:
    """nbdkit file (optionally with filters, e.g. rate=...) on a unix socket."""
    sock = workdir / f"src-{secrets.token_hex(4)}.sock"
    filter_args = [f"--filter={f.split(':')[0]}" for f in filters]
    params = [f.split(":", 1)[1] for f in filters]
    proc = subprocess.Popen(
        [
            *("nbdkit", "-f", "--exit-with-parent", "-r", "-U", str(sock)),
            *(*filter_args, "file", str(path), *params),
        ]
    )
    try:
        _wait_socket(sock, proc)
        yield NbdEndpoint(f"nbd+unix:///?socket={sock}")
    finally:
        proc.terminate()
        proc.wait()


@dataclass
class QemuTarget:
    """A qcow2 served by qemu-nbd on a TCP port (the hub's options), restartable on that port."""

    image: Path
    port: int
    export: str = "disk"
    psk_dir: Path | None = None
    tls: TlsPsk | None = None
    write_bps: int | None = None  # throttle writes so that a copy is still running mid-test
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> NbdEndpoint:
        return NbdEndpoint(f"nbd://127.0.0.1:{self.port}/{self.export}", self.tls)

    def start(self) -> None:
        cmd = [
            *("qemu-nbd", "--cache=none", "--aio=native", "--discard=unmap"),
            *("--detect-zeroes=unmap", "--shared=10", "--persistent"),
            *("-b", "127.0.0.1", "-p", str(self.port), "-x", self.export),
        ]
        if self.psk_dir is not None:
            cmd += [
                "--object",
                f"tls-creds-psk,id=tls0,endpoint=server,dir={self.psk_dir}",
                "--tls-creds",
                "tls0",
            ]
        if self.write_bps:
            cmd += [
                *("--object", f"throttle-group,id=tg0,x-bps-write={self.write_bps}"),
                "--image-opts",
                "driver=throttle,throttle-group=tg0,file.driver=qcow2,"
                f"file.file.driver=file,file.file.filename={self.image}",
            ]
        else:
            cmd += ["-f", "qcow2", str(self.image)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_is_listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qemu-nbd did not listen on {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def sha256(self) -> str:
        """Guest content of the qcow2, read by qemu-img independently of the copy engine."""
        raw = self.image.with_suffix(".check.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(self.image), str(raw)], check=True)
        try:
            digest = hashlib.sha256()
            with open(raw, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            return digest.hexdigest()
        finally:
            raw.unlink()


def threads_named(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def copy_threads() -> list[str]:
    """Threads a copy starts: its workers, the ordered hasher, the block-hash pool."""
    return [name for p in ("nbd-copy", "nbd-hash", "blkhash") for name in threads_named(p)]
