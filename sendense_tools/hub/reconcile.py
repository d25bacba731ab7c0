"""After a restart: stop the qemu-nbd a previous hub run left and free their slots."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sendense_tools.hub.leftovers import is_qemu_nbd, kill_pid, orphan_readers
from sendense_tools.hub.sockets import ExportLayout, remove_stale_sockets
from sendense_tools.hub.store import Store

log = logging.getLogger(__name__)


async def stop_leftovers(
    store: Store, layout: ExportLayout, nodes: set[str], repository: Path
) -> None:
    """Every recorded allocation is stale at start: stop its process, free it."""
    nodes = set(nodes)
    for row in store.allocations():
        pid, node, slot = row["pid"], row["node"], row["port"]
        nodes.add(node)
        if pid and is_qemu_nbd(pid, layout.qemu_nbd_args(node, slot)):
            log.warning("stopping leftover qemu-nbd pid %d (node %s slot %d)", pid, node, slot)
            await kill_pid(pid)
        store.release_slot(node, slot)
    if layout.unix:
        remove_stale_sockets(layout.socket_dir, sorted(nodes))
    for pid in orphan_readers(repository):
        log.warning("stopping leftover image reader qemu-nbd pid %d", pid)
        await kill_pid(pid)


def remove_key_dirs(key_root: Path) -> None:
    """No job runs yet: every PSK directory is a previous run's."""
    if key_root.is_dir():
        for child in key_root.iterdir():
            shutil.rmtree(child, ignore_errors=True)
