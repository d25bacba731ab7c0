"""The WAN half of `python -m bench tunnel`: a disk copied over an emulated long link.

bench/_delay_proxy.py sits between the SSH clients and sshd (25 ms each way: a
50 ms round trip). First the link alone is measured (plain TCP through it), so
the figures after it are known to be the tunnels', not the emulator's. Then, in
alternating rounds: the seed's configuration (OpenSSH `ssh -L`, nbdcopy with 2
NBD connections) and ours as a long-link site is deployed (`sendense tunnel` with
[tuning] connections SSH connections, [backup] connections_per_disk = 8),
copied both with nbdcopy (like for like) and with the product's copy engine.
A sweep of SSH x NBD connections shows where the defaults come from.

Environment: BENCH_TUNNEL_WAN_ROUNDS (3), BENCH_TUNNEL_WAN_DELAY_MS (25, each way),
BENCH_TUNNEL_LINK_MBIT (10000: the link's bandwidth), BENCH_TUNNEL_WAN_NBD_CONNS (8),
BENCH_TUNNEL_WAN_SWEEP=0 to skip the sweep.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.tunnel import (
    MIB,
    ROOT,
    copy_once,
    env_int,
    known_hosts_for,
    nbdkit_source,
    openssh_tunnel,
    process,
    qemu_target,
    sendense_tunnel,
    wait_listening,
)
from sendense_tools.nbd.copy import copy_disk
from sendense_tools.nbd.endpoint import NbdEndpoint
from sendense_tools.tunnel.config import TuningSection
from tests.fixtures.ports import free_port
from tests.fixtures.sshd import Sshd

PROBE_BYTES = 256 * MIB
OPENSSH_BIND, OURS_BIND = "127.0.0.3", "127.0.0.2"


def start_link(listen: int, target: int, delay_ms: int, mbit: int):
    args = [sys.executable, "-m", "bench._delay_proxy", str(listen), str(target)]
    proc = process([*args, str(delay_ms), str(mbit)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc


def _ready(proc: subprocess.Popen) -> None:
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the delay link did not start")


def link_ceiling(delay_ms: int, mbit: int, streams: int) -> float:
    """MB/s of plain TCP through the link alone, `streams` connections at once."""
    target, listen = free_port(), free_port()
    received: list[int] = []
    server = socket.create_server(("127.0.0.1", target))

    def drain(conn: socket.socket) -> None:
        buf, got = bytearray(4 * MIB), 0
        while n := conn.recv_into(buf):
            got += n
        received.append(got)
        conn.close()

    def accept() -> None:
        for _ in range(streams):
            threading.Thread(target=drain, args=(server.accept()[0],)).start()

    def send() -> None:
        chunk = os.urandom(4 * MIB)
        with socket.create_connection(("127.0.0.1", listen)) as s:
            for _ in range(PROBE_BYTES // streams // len(chunk)):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # the far end closed: everything arrived

    with server, start_link(listen, target, delay_ms, mbit) as link:
        _ready(link)
        acceptor = threading.Thread(target=accept)
        acceptor.start()
        start = time.perf_counter()
        senders = [threading.Thread(target=send) for _ in range(streams)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        elapsed = time.perf_counter() - start
        acceptor.join()
    return sum(received) / elapsed / 1e6


def engine_copy_once(work: Path, src_port: int, hub_port: int, host: str, size: int, conns: int):
    """The product's copy engine (copy_disk) into a fresh qcow2; returns wall seconds."""
    with qemu_target(work, hub_port, size):
        src = NbdEndpoint(f"nbd://127.0.0.1:{src_port}/")
        dst = NbdEndpoint(f"nbd://{host}:{hub_port}/disk")
        start = time.perf_counter()
        asyncio.run(copy_disk("disk0", src, dst, connections=conns))
        return time.perf_counter() - start


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"


def wan(hub: Sshd, work: Path, image: Path, size: int, data: int) -> None:
    rounds = env_int("BENCH_TUNNEL_WAN_ROUNDS", 3)
    delay = env_int("BENCH_TUNNEL_WAN_DELAY_MS", 25)
    mbit = env_int("BENCH_TUNNEL_LINK_MBIT", 10_000)
    # [backup] connections_per_disk's default (2, as the seed's) is for a LAN; a site behind a
    # long link is deployed with 8 (the role variable's description says so): that is ours here.
    ssh_conns = TuningSection().connections
    nbd_conns = env_int("BENCH_TUNNEL_WAN_NBD_CONNS", 8)
    rtt = f"{2 * delay} ms RTT"

    ceilings = {n: link_ceiling(delay, mbit, n) for n in (1, 4)}
    print(f"WAN link: {delay} ms each way, {mbit} Mbit/s, {os.cpu_count()} cores")
    for n, rate in ceilings.items():
        print(f"  link ceiling, plain TCP, {n} connection(s): {rate:6.0f} MB/s")

    hub_port, src_port, link_port = hub.nbd_ports[0], free_port(), free_port()
    kh = known_hosts_for(hub, link_port, work / "known_hosts.wan")
    seed_name = "seed: OpenSSH ssh -L, nbdcopy 2 NBD conns"
    ours_name = f"ours: sendense {ssh_conns} SSH, nbdcopy {nbd_conns} NBD conns"
    engine_name = f"ours: sendense {ssh_conns} SSH, copy engine {nbd_conns} NBD conns"
    times: dict[str, list[float]] = {seed_name: [], ours_name: [], engine_name: []}
    sweep: list[tuple[str, float]] = []
    with (
        nbdkit_source(image, src_port) as src,
        start_link(link_port, hub.port, delay, mbit) as link,
    ):
        wait_listening(src_port, "127.0.0.1", src, "nbdkit")
        _ready(link)
        with (
            openssh_tunnel(hub, OPENSSH_BIND, link_port, kh),
            sendense_tunnel(hub, work, link_port, kh, connections=ssh_conns),
        ):
            for _ in range(rounds):
                runs = {
                    seed_name: lambda: copy_once(work, src_port, hub_port, OPENSSH_BIND, size, 2),
                    ours_name: lambda: copy_once(
                        work, src_port, hub_port, OURS_BIND, size, nbd_conns
                    ),
                    engine_name: lambda: engine_copy_once(
                        work, src_port, hub_port, OURS_BIND, size, nbd_conns
                    ),
                }
                for name, run in runs.items():
                    times[name].append(run())
            if os.environ.get("BENCH_TUNNEL_WAN_SWEEP", "1") != "0":
                for n in (1, 8):
                    t = copy_once(work, src_port, hub_port, OPENSSH_BIND, size, n)
                    sweep.append((f"OpenSSH ssh -L, nbdcopy {n} NBD conns", t))
        if os.environ.get("BENCH_TUNNEL_WAN_SWEEP", "1") != "0":
            for s in (1, 2, 4):
                with sendense_tunnel(hub, work, link_port, kh, connections=s):
                    for n in (4, 8):
                        t = copy_once(work, src_port, hub_port, OURS_BIND, size, n)
                        sweep.append((f"sendense {s} SSH, nbdcopy {n} NBD conns", t))

    print(f"WAN ({rtt}): a {size // MIB} MiB disk ({data // MIB} MiB data), {rounds} rounds")
    for name, values in times.items():
        rate = data / statistics.median(values) / 1e6
        print(f"  {name:<48} {_median(values)}  {rate:5.0f} MB/s")
    med = {name: statistics.median(v) for name, v in times.items()}
    for name in (ours_name, engine_name):
        what = "nbdcopy" if name == ours_name else "copy engine"
        ratio = med[seed_name] / med[name]
        print(f"  speed ratio ours ({what}) / seed at {rtt}: {ratio:.2f} (goal >= 2.0)")
    if sweep:
        print(f"WAN sweep ({rtt}), one run each:")
        for name, t in sweep:
            print(f"  {name:<48} {t:6.2f} s  {data / t / 1e6:5.0f} MB/s")
