"""The hub's old export layout against the new one, in copy throughput.

old: a TCP export with per-job TLS-PSK (what the hub did before nodes were
isolated by sshd and the kernel); new: the node's unix socket, no TLS (the SSH
connection already encrypts). A third row, TCP without TLS, tells the socket's
share from TLS's.

A 1 GiB sparse raw disk with ~600 MB of data is copied with copy_disk (2 connections)
from an nbdkit file source into a fresh qcow2 export started exactly as the hub starts
one (sendense_tools.hub.exports: same options, same TLS-PSK directory with dh-params),
each layout in turn, 3 rounds. Prints the median seconds and the ratios old/new.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bench.copy import free_port, make_disk
from sendense_tools.hub.exports import ExportAddress, start_export
from sendense_tools.hub.images import create_image
from sendense_tools.hub.nbdtls import write_tls_dir
from sendense_tools.hub.options import ExportOptions, effective_options
from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk
from sendense_tools.nbd.sources import file_source

SIZE = 1 << 30
DATA = 600 * 10**6
ROUNDS = 3
CONNECTIONS = 2
OLD = "old: TCP + TLS-PSK"
TCP = "TCP, no TLS"
NEW = "new: unix socket, no TLS"
LAYOUTS = {OLD: ("tcp", True), TCP: ("tcp", False), NEW: ("unix", False)}


async def copy_once(source: NbdEndpoint, workdir: Path, listen: str, tls: bool, want: str) -> float:
    """One job as the hub runs it: fresh qcow2, fresh key, one qemu-nbd; returns copy seconds."""
    job = workdir / f"job-{secrets.token_hex(4)}"
    job.mkdir()
    address = (
        ExportAddress(10100, socket=job / "10100.sock")
        if listen == "unix"
        else ExportAddress(free_port())
    )
    image = job / "disk0.qcow2"
    await create_image(image, SIZE)
    psk = TlsPsk("job", secrets.token_hex(32)) if tls else None
    tls_dir = None
    if psk is not None:
        tls_dir = job / "tls"
        write_tls_dir(tls_dir, psk.username, psk.psk_hex)
    opts = effective_options(ExportOptions(), job)
    export = await start_export("disk0", address, "disk0", image, opts, lambda _: None, tls_dir)
    try:
        await export.wait_ready()
        t = time.perf_counter()
        result = await copy_disk(
            "disk0", source, NbdEndpoint(export.uri, tls=psk), connections=CONNECTIONS
        )
        seconds = time.perf_counter() - t
    finally:
        await export.stop()
    if result.sha256 != want:
        raise RuntimeError(f"copy to {address} (tls {tls}): SHA-256 mismatch")
    image.unlink()
    return seconds


async def run(workdir: Path) -> dict[str, list[float]]:
    t = time.perf_counter()
    want = make_disk(workdir / "source.raw", SIZE, DATA, seed=5)
    print(f"source: 1 GiB disk, ~600 MB data (made in {time.perf_counter() - t:.1f} s)")
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    async with file_source(str(workdir / "source.raw")) as source:
        for _ in range(ROUNDS):  # in turn, so drift hits every layout alike
            for name, (listen, tls) in LAYOUTS.items():
                times[name].append(await copy_once(source, workdir, listen, tls, want))
    return times


def main() -> None:
    # /var/tmp, not /tmp: the hub's cache=none needs O_DIRECT, which tmpfs lacks.
    with tempfile.TemporaryDirectory(prefix="sendense-bench-auth-", dir="/var/tmp") as tmp:
        times = asyncio.run(run(Path(tmp)))
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    print(f"{'qemu-nbd qcow2 target (copy_disk, 2 conns)':44} {'median s':>9} {'MB/s':>7}  runs")
    for name, runs in times.items():
        shown = " ".join(f"{r:.2f}" for r in runs)
        print(f"{name:44} {medians[name]:9.2f} {DATA / 1e6 / medians[name]:7.0f}  {shown}")
    old, new, tcp = medians[OLD], medians[NEW], medians[TCP]
    print(
        f"new layout vs old: time {new / old:.2f}x, throughput {old / new:.2f}x "
        f"(TLS-PSK alone {old / tcp:.2f}x the time of plain TCP; "
        f"unix socket vs TCP {new / tcp:.2f}x)"
    )


if __name__ == "__main__":
    main()
