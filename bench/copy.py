"""Copy engine vs nbdcopy: nbdkit file source -> qemu-nbd qcow2 target (the hub's options).

A 2 GiB sparse raw disk with ~1.3 GB of random data in extents separated by holes. Every
round copies it with nbdcopy and with copy_disk (1, 2, 4 connections), each into a fresh qcow2
served over loopback TCP; prints median seconds and the ratio ours/nbdcopy (lower is better).
nbdcopy runs with --target-is-zero --flush so that both do the same work (skip holes on a
fresh target, flush at the end); plain nbdcopy is shown too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint

SIZE = 2 << 30
DATA = 1300 * 10**6
ROUNDS = 3
HUB_OPTIONS = ["--cache=none", "--aio=native", "--discard=unmap", "--detect-zeroes=unmap"]


def make_disk(path: Path, size: int, data: int, seed: int = 7) -> str:
    """Sparse raw file: random-sized data extents (64 KiB..32 MiB) with holes between."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    hole_share = (size - data) / size
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            length = min(size - pos, rng.randrange(1, 513) * (64 << 10))
            if rng.random() < hole_share:
                digest.update(bytes(length))
            else:
                block = os.urandom(length)
                f.seek(pos)
                f.write(block)
                digest.update(block)
            pos += length
    return digest.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def qcow2_target(workdir: Path, size: int, options: list[str] = HUB_OPTIONS) -> Iterator[str]:
    image = workdir / "target.qcow2"
    image.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)], check=True)
    port = free_port()
    pidfile = workdir / "qemu-nbd.pid"
    # --fork returns once qemu-nbd listens, so no probing connection is needed
    subprocess.run(
        [
            *("qemu-nbd", *options, "--shared=10", "--persistent", "--fork"),
            *("--pid-file", str(pidfile), "-b", "127.0.0.1", "-p", str(port)),
            *("-x", "disk", "-f", "qcow2", str(image)),
        ],
        check=True,
    )
    pid = int(pidfile.read_text())
    try:
        yield f"nbd://127.0.0.1:{port}/disk"
    finally:
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.01)
        image.unlink(missing_ok=True)


def time_nbdcopy(src: str, workdir: Path, size: int, extra: list[str]) -> float:
    with qcow2_target(workdir, size) as dst:
        t = time.perf_counter()
        subprocess.run(["nbdcopy", *extra, src, dst], check=True)
        return time.perf_counter() - t


def time_ours(
    src: str, workdir: Path, size: int, connections: int, want: str, sha256: bool = True
) -> float:
    with qcow2_target(workdir, size) as dst:
        t = time.perf_counter()
        result = asyncio.run(
            copy_disk(
                "disk0", NbdEndpoint(src), NbdEndpoint(dst), connections=connections, sha256=sha256
            )
        )
        seconds = time.perf_counter() - t
    if sha256 and result.sha256 != want:
        raise RuntimeError(f"copy with {connections} connections: SHA-256 mismatch")
    if result.checksum is None:
        raise RuntimeError(f"copy with {connections} connections: no block checksum")
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sendense-bench-") as tmp:
        workdir = Path(tmp)
        t = time.perf_counter()
        full_sha = make_disk(workdir / "full.raw", SIZE, DATA)
        tenth_sha = make_disk(workdir / "tenth.raw", SIZE, DATA // 10, seed=11)
        print(f"source: 2 GiB disk, ~1.3 GB data (made in {time.perf_counter() - t:.1f} s)")
        sockets = {name: workdir / f"{name}.sock" for name in ("full", "tenth")}
        servers = [
            subprocess.Popen(
                [
                    "nbdkit",
                    "-f",
                    "--exit-with-parent",
                    "-U",
                    str(sock),
                    "file",
                    str(workdir / f"{name}.raw"),
                ]
            )
            for name, sock in sockets.items()
        ]
        try:
            for sock in sockets.values():
                while not sock.exists():
                    time.sleep(0.02)
            src = f"nbd+unix:///?socket={sockets['full']}"
            cases = {
                "nbdcopy": lambda: time_nbdcopy(src, workdir, SIZE, []),
                "nbdcopy --target-is-zero --flush": lambda: time_nbdcopy(
                    src, workdir, SIZE, ["--target-is-zero", "--flush"]
                ),
            }
            for n in (1, 2, 4):
                cases[f"copy_disk, {n} connection{'s' if n > 1 else ''}"] = lambda n=n: time_ours(
                    src, workdir, SIZE, n, full_sha
                )
            tenth = f"nbd+unix:///?socket={sockets['tenth']}"
            cases["copy_disk, 2 connections, 10% allocated"] = lambda: time_ours(
                tenth, workdir, SIZE, 2, tenth_sha
            )
            # Without the SHA-256 of every byte: the block checksum only.
            cases["copy_disk, 2 conns, no sha256"] = lambda: time_ours(
                src, workdir, SIZE, 2, full_sha, sha256=False
            )
            cases["copy_disk, 2 conns, no sha256, 10% alloc."] = lambda: time_ours(
                tenth, workdir, SIZE, 2, tenth_sha, sha256=False
            )
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(ROUNDS):
                for name, run in cases.items():
                    times[name].append(run())
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait()
    reference = statistics.median(times["nbdcopy --target-is-zero --flush"])
    full = statistics.median(times["copy_disk, 2 connections"])
    print(f"{'path':42} {'median s':>9} {'runs':>20} {'ours/nbdcopy':>13}")
    for name, runs in times.items():
        med = statistics.median(runs)
        ratio = f"{med / reference:.2f}x" if name.startswith("copy_disk") else ""
        shown = " ".join(f"{r:.2f}" for r in runs)
        print(f"{name:42} {med:9.2f} {shown:>20} {ratio:>13}")
    tenth = statistics.median(times["copy_disk, 2 connections, 10% allocated"])
    bare = statistics.median(times["copy_disk, 2 conns, no sha256"])
    bare_tenth = statistics.median(times["copy_disk, 2 conns, no sha256, 10% alloc."])
    print(
        f"throughput ours (2 conns) / nbdcopy: {reference / full:.2f}x (goal >= 0.95); "
        f"without sha256: {reference / bare:.2f}x"
    )
    print(
        f"10% allocated / full: {tenth / full:.2f}; without sha256: {bare_tenth / bare:.2f} "
        "(goal <= 0.12)"
    )


if __name__ == "__main__":
    main()
