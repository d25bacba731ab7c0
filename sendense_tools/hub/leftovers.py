"""Processes a previous hub run left behind: is this pid still our qemu-nbd, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from pathlib import Path


def is_qemu_nbd(pid: int, identity: set[tuple[str, str]]) -> bool:
    """Whether `pid` is still a qemu-nbd we started with one of these (option, value)
    pairs (pids get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        return False
    names = [os.path.basename(a.decode(errors="replace")) for a in argv]
    if "qemu-nbd" not in names:
        return False
    args = [a.decode(errors="replace") for a in argv]
    return any(pair in identity for pair in itertools.pairwise(args))


async def kill_pid(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for _ in range(100):
            if not _alive(pid):
                return
            await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def orphan_readers(repository: Path) -> list[int]:
    """Read-only qemu-nbd of images under `repository` whose parent has died (the
    checksum readers of a hub that was killed): nobody will ever read from them."""
    root = f"{repository.resolve()}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, parent = fields[0], fields[1]
        if state == "Z" or parent != "1" or b"--read-only" not in argv:
            continue
        if os.path.basename(argv[0].decode(errors="replace")) != "qemu-nbd":
            continue
        if any(a.startswith(root) for a in argv):
            found.append(int(entry.name))
    return found
