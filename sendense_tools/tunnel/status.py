"""The supervisor's state as a JSON file that `sendense tunnel status` reads."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from sendense_tools.errors import SendenseError


@dataclass
class TunnelStatus:
    hub: str
    pid: int
    connected: bool = False
    since: str | None = None
    connections: int = 1
    connections_up: int = 0
    reconnects: int = 0
    failed_attempts: int = 0
    backoff_seconds: float | None = None
    next_attempt_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    forwards_up: int = 0
    forwards_total: int = 0
    reverse_up: bool = False
    # "unix" (this node's hub sockets) or "tcp" (the old layout's hub ports), and
    # what the first and last NBD forward lead to.
    nbd_listen: str = "unix"
    nbd_targets: str = ""
    updated_at: str | None = None


def write_status(path: str | Path, status: TunnelStatus) -> None:
    """Replace the file atomically: a reader sees the old or the new state, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(status), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise SendenseError(f"no tunnel status file {p}: is the tunnel running?") from None
    except (OSError, ValueError) as exc:
        raise SendenseError(f"tunnel status file {p} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise SendenseError(f"tunnel status file {p} is not a JSON object")
    return data


def process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
