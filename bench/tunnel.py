"""Tunnel throughput: nbdcopy through `sendense tunnel` vs OpenSSH `ssh -L` vs direct.

A seeded sparse raw disk is served by nbdkit (the node's source) and copied
with nbdcopy into a fresh qcow2 served by qemu-nbd behind a real sshd (the
hub), alternating the three paths. WAN mode (bench/_wan.py) puts an emulated
50 ms round-trip link between the SSH clients and sshd and compares the seed's
set-up (OpenSSH, 2 NBD connections per disk) with ours at our defaults.

Environment: BENCH_TUNNEL_ROUNDS (3), BENCH_TUNNEL_SIZE_MIB (1024),
BENCH_TUNNEL_WAN_SIZE_MIB (1024: nbdcopy hands its threads large slices of the
disk, so a small one leaves most of them idle), BENCH_TUNNEL_LAN=0 /
BENCH_TUNNEL_WAN=0 to skip LAN / WAN mode (WAN mode's own knobs: bench/_wan.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.ports import free_port, port_is_listening
from tests.fixtures.sshd import Sshd, running_sshd, write_toml

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def seed_disk(path: Path, size_mib: int) -> int:
    """A sparse disk with about 60% data in 8 MiB runs; returns the data bytes."""
    block = os.urandom(4 * MIB)
    written = 0
    with path.open("wb") as f:
        f.truncate(size_mib * MIB)
        for i, off in enumerate(range(0, size_mib * MIB, 8 * MIB)):
            if i % 5 in (1, 4):
                continue  # holes
            f.seek(off)
            for half in range(2):
                f.write(bytes([i & 0xFF, half]) + block[2:])
            written += 8 * MIB
    return written


def wait_listening(port: int, host: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while not port_is_listening(port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start listening on {host}:{port}")
        time.sleep(0.02)


@contextlib.contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def nbdkit_source(image: Path, port: int) -> contextlib.AbstractContextManager:
    args = ["nbdkit", "-f", "-r", "-i", "127.0.0.1", "-p", str(port), "file", str(image)]
    return process(args)


@contextlib.contextmanager
def qemu_target(work: Path, hub_port: int, size: int) -> Iterator[None]:
    """A fresh qcow2 served by qemu-nbd with the hub's options on 127.0.0.1:hub_port."""
    target = work / "target.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), str(size)], check=True)
    qemu = [
        "qemu-nbd", "--shared=10", "--persistent", "-b", "127.0.0.1", "-p", str(hub_port),
        "-x", "disk", "-f", "qcow2", "--cache=none", "--aio=native", "--discard=unmap",
        "--detect-zeroes=unmap", str(target),
    ]  # fmt: skip
    try:
        # stderr off: the readiness probe below makes qemu-nbd log a failed handshake.
        with process(qemu, stderr=subprocess.DEVNULL) as q:
            wait_listening(hub_port, "127.0.0.1", q, "qemu-nbd")
            yield
    finally:
        target.unlink(missing_ok=True)


def copy_once(
    work: Path, src_port: int, hub_port: int, dst_host: str, size: int, conns: int
) -> float:
    """One nbdcopy into a fresh qcow2 on the hub side; returns wall seconds."""
    with qemu_target(work, hub_port, size):
        start = time.perf_counter()
        subprocess.run(
            [
                "nbdcopy",
                f"--connections={conns}",
                # nbdcopy opens no more connections than threads, and its threads
                # default to the cores: 2 here, whatever --connections says.
                f"--threads={conns}",
                f"nbd://127.0.0.1:{src_port}",
                f"nbd://{dst_host}:{hub_port}/disk",
            ],
            check=True,
        )
        return time.perf_counter() - start


def known_hosts_for(hub: Sshd, port: int, path: Path) -> Path:
    pub = (hub.base / "host_key.pub").read_text().split()
    path.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return path


@contextlib.contextmanager
def openssh_tunnel(hub: Sshd, bind: str, ssh_port: int, known_hosts: Path) -> Iterator[float]:
    """The seed's tunnel: one `ssh -N` with a -L per port; yields seconds to all up."""
    ports = [*range(hub.nbd_ports[0], hub.nbd_ports[1] + 1), hub.api_port]
    args = [
        "ssh", "-N", "-q", "-F", "none", "-i", str(hub.client_key), "-p", str(ssh_port),
        "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3",
    ]  # fmt: skip
    for p in ports:
        args += ["-L", f"{bind}:{p}:127.0.0.1:{p}"]
    args.append(f"{hub.user}@127.0.0.1")
    start = time.perf_counter()
    with process(args) as proc:
        for p in ports:
            wait_listening(p, bind, proc, "ssh -L")
        yield time.perf_counter() - start


@contextlib.contextmanager
def sendense_tunnel(
    hub: Sshd,
    work: Path,
    ssh_port: int,
    known_hosts: Path,
    connections: int = 1,
    bind: str = "127.0.0.2",
):
    """`sendense tunnel run` listening on `bind`; yields seconds from start to every forward up."""
    status = work / f"status-{bind}-{ssh_port}-{connections}.json"
    status.unlink(missing_ok=True)  # a previous tunnel's "connected" is not ours
    cfg = hub.tunnel_config(
        status,
        hub={"port": ssh_port, "known_hosts": str(known_hosts)},
        forwards={"bind": bind},
        tuning={"connections": connections},
    )
    config = write_toml(work / f"tunnel-{bind}.toml", cfg)
    args = [sys.executable, "-m", "sendense_tools.tunnel", "run", "--config", str(config)]
    start = time.perf_counter()
    with process(args, stdout=subprocess.DEVNULL, cwd=ROOT) as proc:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("sendense tunnel exited")
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(status.read_text())
                if st["connected"] and st["forwards_up"] == st["forwards_total"]:
                    break
            time.sleep(0.01)
        yield time.perf_counter() - start


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"


def lan(hub: Sshd, work: Path, image: Path, size: int, data: int) -> None:
    rounds = env_int("BENCH_TUNNEL_ROUNDS", 3)
    hub_port = hub.nbd_ports[0]
    src_port = free_port()
    times: dict[str, list[float]] = {"direct": [], "openssh": [], "sendense": []}
    with (
        nbdkit_source(image, src_port) as src,
        openssh_tunnel(hub, "127.0.0.3", hub.port, hub.known_hosts) as ssh_up,
        sendense_tunnel(hub, work, hub.port, hub.known_hosts) as ours_up,
    ):
        wait_listening(src_port, "127.0.0.1", src, "nbdkit")
        hosts = {"direct": "127.0.0.1", "openssh": "127.0.0.3", "sendense": "127.0.0.2"}
        for _ in range(rounds):
            for mode, host in hosts.items():
                times[mode].append(copy_once(work, src_port, hub_port, host, size, 4))
    n_fw = hub.nbd_ports[1] - hub.nbd_ports[0] + 2
    print(f"LAN: nbdcopy of a {size // MIB} MiB disk ({data // MIB} MiB data), {rounds} rounds")
    for mode, values in times.items():
        print(f"  {mode:<9} {_fmt(values)}")
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"  speed ratio sendense/OpenSSH: {med['openssh'] / med['sendense']:.2f} (goal >= 1.0)")
    print(f"  speed ratio sendense/direct:  {med['direct'] / med['sendense']:.2f} (goal >= 0.8)")
    print(f"  start to all {n_fw} local forwards + reverse up: sendense {ours_up:.2f} s")
    print(f"  start to all {n_fw} local forwards up: OpenSSH {ssh_up:.2f} s")


def main() -> None:
    size_mib = env_int("BENCH_TUNNEL_SIZE_MIB", 1024)
    wan_mib = env_int("BENCH_TUNNEL_WAN_SIZE_MIB", 1024)
    # On disk, not tmpfs: qemu-nbd --cache=none needs O_DIRECT.
    with (
        tempfile.TemporaryDirectory(prefix="sendense-bench-", dir="/var/tmp") as tmp,
        # TCP targets for every path (the tunnels are compared here, not the hub's
        # layouts: bench/e2e.py and bench/nbd_auth.py compare those).
        running_sshd(nbd_count=101, listen="tcp") as hub,
    ):
        work = Path(tmp)
        image = work / "source.raw"
        if os.environ.get("BENCH_TUNNEL_LAN", "1") != "0":
            data = seed_disk(image, size_mib)
            lan(hub, work, image, size_mib * MIB, data)
        if os.environ.get("BENCH_TUNNEL_WAN", "1") != "0":
            small = work / "source-wan.raw"
            wan_data = seed_disk(small, wan_mib)
            image.unlink(missing_ok=True)
            from bench._wan import wan  # it imports this module's helpers

            wan(hub, work, small, wan_mib * MIB, wan_data)


if __name__ == "__main__":
    main()
