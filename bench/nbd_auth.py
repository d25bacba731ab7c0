"""What per-job NBD authentication (qemu-nbd TLS-PSK) costs in copy throughput.

A 1 GiB sparse raw disk with ~600 MB of data is copied with copy_disk (2 connections)
from an nbdkit file source into a fresh qcow2 export started exactly as the hub starts
one (sendense_tools.hub.exports: same options, same TLS-PSK directory with dh-params),
once without TLS and once with a fresh PSK, alternating, 3 rounds each. Prints the
median seconds and the ratio TLS/plain (1.00 = free).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from bench.copy import free_port, make_disk
from sendense_tools.hub.exports import (
    ExportOptions,
    create_image,
    effective_options,
    start_export,
    write_tls_dir,
)
from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint, TlsPsk
from sendense_tools.nbd.sources import file_source

SIZE = 1 << 30
DATA = 600 * 10**6
ROUNDS = 3
CONNECTIONS = 2


async def copy_once(source: NbdEndpoint, workdir: Path, tls: bool, want: str) -> float:
    """One job as the hub runs it: fresh qcow2, fresh key, one qemu-nbd; returns copy seconds."""
    job = workdir / f"job-{secrets.token_hex(4)}"
    job.mkdir()
    image = job / "disk0.qcow2"
    await create_image(image, SIZE)
    psk = TlsPsk("job", secrets.token_hex(32)) if tls else None
    tls_dir = None
    if psk is not None:
        tls_dir = job / "tls"
        write_tls_dir(tls_dir, psk.username, psk.psk_hex)
    opts = effective_options(ExportOptions(), job)
    export = await start_export("disk0", free_port(), "disk0", image, opts, lambda _: None, tls_dir)
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
        raise RuntimeError(f"copy {'with' if tls else 'without'} TLS: SHA-256 mismatch")
    image.unlink()
    return seconds


async def run(workdir: Path) -> dict[str, list[float]]:
    t = time.perf_counter()
    want = make_disk(workdir / "source.raw", SIZE, DATA, seed=5)
    print(f"source: 1 GiB disk, ~600 MB data (made in {time.perf_counter() - t:.1f} s)")
    times: dict[str, list[float]] = {"plain": [], "TLS-PSK": []}
    async with file_source(str(workdir / "source.raw")) as source:
        for _ in range(ROUNDS):
            times["plain"].append(await copy_once(source, workdir, False, want))
            times["TLS-PSK"].append(await copy_once(source, workdir, True, want))
    return times


def main() -> None:
    # /var/tmp, not /tmp: the hub's cache=none needs O_DIRECT, which tmpfs lacks.
    with tempfile.TemporaryDirectory(prefix="sendense-bench-auth-", dir="/var/tmp") as tmp:
        times = asyncio.run(run(Path(tmp)))
    plain = statistics.median(times["plain"])
    print(f"{'NBD target (copy_disk, 2 connections)':40} {'median s':>9} {'MB/s':>7} {'runs':>17}")
    for name, runs in times.items():
        med = statistics.median(runs)
        shown = " ".join(f"{r:.2f}" for r in runs)
        print(f"{'qemu-nbd qcow2, ' + name:40} {med:9.2f} {DATA / 1e6 / med:7.0f} {shown:>17}")
    tls = statistics.median(times["TLS-PSK"])
    print(
        f"per-job NBD authentication: TLS/plain time {tls / plain:.2f}x "
        f"(throughput {plain / tls:.2f}x of plain)"
    )


if __name__ == "__main__":
    main()
