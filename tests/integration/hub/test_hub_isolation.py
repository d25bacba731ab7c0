"""Node a cannot occupy node b's exports: a real hub behind the role's sshd policy.

qemu-nbd counts a client against --shared=10 when it connects, before any TLS
handshake. In the new layout node a's tunnel user reaches only its own sockets,
so ten idle connections on each of its exports stall only a; b's backup runs.
The old layout's shared TCP exports let a stall b, TLS-PSK or not (the contrast).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncssh
import nbd
import pytest

from tests.fixtures.sshd import OTHER_NODE, TEST_NODE, TEST_USER, Sshd, connect_as, running_sshd

from .conftest import MiB, open_export, targets

pytestmark = pytest.mark.asyncio

GREETING = b"NBDMAGICIHAVEOPT"
SHARED = 10


async def _login(sshd: Sshd) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        sshd.host,
        sshd.port,
        username=sshd.user,
        client_keys=[str(sshd.client_key)],
        known_hosts=str(sshd.known_hosts),
        agent_path=None,
    )


async def _greeted(opening) -> tuple[bool, asyncssh.SSHWriter]:
    """Open an idle NBD connection; whether the server greeted it within 3 s."""
    reader, writer = await opening
    try:
        return (await asyncio.wait_for(reader.readexactly(18), 3))[:16] == GREETING, writer
    except TimeoutError:
        return False, writer


async def _backups(h, node_vms: dict[str, str]) -> dict[str, dict]:
    records = {}
    for node, vm in node_vms.items():
        h.node.vms[vm] = [4 * MiB, 4 * MiB]
        code, records[node] = await h.call("POST", "/api/v1/backups", {"vm": vm, "node": node})
        assert code == 201, records[node]
    return records


async def test_a_holding_ten_idle_connections_per_export_does_not_stop_b(make_hub):
    with running_sshd(nbd_count=4) as sshd:
        h = await make_hub(
            port_range=sshd.nbd_ports,
            nodes=(TEST_NODE, OTHER_NODE),
            node2_live=True,
            socket_dir=str(sshd.socket_dir),
        )
        records = await _backups(h, {TEST_NODE: "vm-a", OTHER_NODE: "vm-b"})
        a_slots = [d["nbd_port"] for d in records[TEST_NODE]["disk_results"]]
        b_slots = [d["nbd_port"] for d in records[OTHER_NODE]["disk_results"]]
        # Per-node pools: both nodes were given the same slot numbers.
        assert a_slots == b_slots == list(sshd.slots[:2])
        async with await _login(sshd) as conn:
            held = []
            for slot in a_slots:
                path = str(sshd.slot_socket(slot, TEST_NODE))
                for _ in range(SHARED):
                    ok, writer = await _greeted(conn.open_unix_connection(path))
                    assert ok
                    held.append(writer)
                # The ten really fill a's export: one more is not served.
                ok, writer = await _greeted(conn.open_unix_connection(path))
                assert not ok
                held.append(writer)
            for slot in b_slots:
                path = str(sshd.slot_socket(slot, OTHER_NODE))
                with pytest.raises(asyncssh.ChannelOpenError):
                    await conn.open_unix_connection(path)
                assert await asyncio.to_thread(sshd.denied_path, path)
                # Nor can a process of sdt-a on the hub reach the hub's socket of b.
                assert await asyncio.to_thread(connect_as, TEST_USER, path) == "EACCES"
            # Meanwhile b writes both disks through its own sockets, and the hub checks
            # each qcow2's SHA-256 against what b read: bit-identical, not just done.
            started = time.monotonic()
            await h.finish(records[OTHER_NODE]["id"], node=OTHER_NODE)
            final = await h.wait_status(records[OTHER_NODE]["id"])
            assert final["status"] == "completed", final["error"]
            assert all(d["sha256"] == d["sha256_qcow2"] for d in final["disk_results"])
            assert time.monotonic() - started < 60
            for writer in held:
                writer.close()
        await h.call("POST", f"/api/v1/backups/{records[TEST_NODE]['id']}/cancel")


async def test_old_tcp_layout_let_a_stall_b_even_with_tls_psk(make_hub):
    # The contrast that makes the test above meaningful: the same ten idle connections,
    # through the same kind of tunnel user, aimed at b's export in the old layout.
    with running_sshd(nbd_count=4, listen="tcp") as sshd:
        h = await make_hub(
            port_range=sshd.nbd_ports,
            nodes=(TEST_NODE, OTHER_NODE),
            node2_live=True,
            listen="tcp",
            tls_psk=True,
        )
        records = await _backups(h, {TEST_NODE: "vm-a", OTHER_NODE: "vm-b"})
        b_disk = records[OTHER_NODE]["disk_results"][0]
        async with await _login(sshd) as conn:
            held = []
            for _ in range(SHARED):
                ok, writer = await _greeted(conn.open_connection("127.0.0.1", b_disk["nbd_port"]))
                assert ok  # a is let in: the PSK is only checked after the greeting
                held.append(writer)
            start = h.node.start_for(records[OTHER_NODE]["id"])
            uri = targets(start["nbd_targets"])[b_disk["disk_id"]]

            def b_connects() -> bool:
                handle = open_export(uri, start["nbd_tls"])
                handle.shutdown()
                return True

            b_try = asyncio.ensure_future(asyncio.to_thread(b_connects))
            done, _ = await asyncio.wait({b_try}, timeout=3)
            assert not done  # b cannot even start its copy
            for writer in held:
                writer.close()
            with contextlib.suppress(nbd.Error):
                assert await asyncio.wait_for(b_try, 60)
        for rec in records.values():
            await h.call("POST", f"/api/v1/backups/{rec['id']}/cancel")
