"""Each node's export directory: `<socket_dir>/<node>/<slot>.sock`.

The directory belongs to the hub user with group `sdt-<node>` and mode 2750
(setgid: every socket in it gets that group). Only that node's tunnel user (and
the hub) can reach its sockets; sshd's PermitOpen keeps every other node's
tunnel user out of the paths too. The role creates the directories with
systemd-tmpfiles; a hub started by hand or in tests creates a missing one here.
"""

from __future__ import annotations

import grp
import logging
import os
from pathlib import Path

from sendense_tools.hub.exports import ExportAddress, ExportError

log = logging.getLogger(__name__)

NODE_DIR_MODE = 0o2750


def tunnel_group(node: str) -> str:
    return f"sdt-{node}"


def socket_path(socket_dir: str | Path, node: str, slot: int) -> Path:
    return Path(socket_dir) / node / f"{slot}.sock"


def ensure_node_dir(socket_dir: str | Path, node: str) -> Path:
    """The node's directory, created (2750, group sdt-<node> when it exists) if missing."""
    directory = Path(socket_dir) / node
    if directory.is_dir():
        return directory
    try:
        Path(socket_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return directory
    except OSError as exc:
        raise ExportError(f"cannot create {directory}: {exc.strerror}") from None
    try:
        os.chown(directory, -1, grp.getgrnam(tunnel_group(node)).gr_gid)
    except KeyError:
        log.warning("no group %s: %s keeps the hub's group", tunnel_group(node), directory)
    except PermissionError:
        log.warning("cannot give %s to group %s: not root", directory, tunnel_group(node))
    # chmod, not mkdir's mode: the umask would take bits off and mkdir ignores setgid.
    directory.chmod(NODE_DIR_MODE)
    return directory


def remove_stale_sockets(socket_dir: str | Path, nodes: list[str]) -> int:
    """Socket files that killed qemu-nbd left behind (called when nothing runs)."""
    removed = 0
    for node in nodes:
        for path in (Path(socket_dir) / node).glob("*.sock"):
            try:
                path.unlink()
            except OSError as exc:
                log.warning("cannot remove stale socket %s: %s", path, exc.strerror)
            else:
                removed += 1
    return removed


class ExportLayout:
    """Where the export of (node, slot) listens, by `[nbd] listen`."""

    def __init__(self, listen: str, socket_dir: str, bind: str) -> None:
        self.listen = listen
        self.socket_dir = socket_dir
        self.bind = bind

    @property
    def unix(self) -> bool:
        return self.listen == "unix"

    def address(self, node: str, slot: int) -> ExportAddress:
        if not self.unix:
            return ExportAddress(slot, host=self.bind)
        ensure_node_dir(self.socket_dir, node)
        return ExportAddress(slot, socket=socket_path(self.socket_dir, node, slot))

    def target_host(self) -> str:
        """The host named in nbd_targets: the node's own forward of the slot (unix), or the
        hub's bind address that the node's forward of that port leads to (tcp)."""
        return "127.0.0.1" if self.unix else self.bind

    def qemu_nbd_args(self, node: str, slot: int) -> set[tuple[str, str]]:
        """The (option, value) pairs that identify a qemu-nbd we started for (node, slot)
        in either layout: after a restart the hub may run with the other one."""
        return {
            ("-k", str(socket_path(self.socket_dir, node, slot))),
            ("-p", str(slot)),
        }
