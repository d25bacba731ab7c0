"""New qcow2 images in the repository, and why the repository refused one."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from pathlib import Path

from sendense_tools.process import dying_with_parent


class ImageError(Exception):
    """qemu-img failed for a reason that is not the repository's (one line for a person)."""


class StorageError(Exception):
    """The repository refused a new image; `errno` says why (ENOSPC, EACCES, EROFS...)."""

    def __init__(self, path: Path, code: int, reason: str) -> None:
        super().__init__(f"cannot create {path}: {reason}")
        self.errno = code


# Causes worth telling apart when qemu-img names them (it prints strerror's text).
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO)


async def run_tool(*argv: str, env: dict[str, str] | None = None) -> None:
    # A hub killed mid-merge must not leave a qemu-img writing a file the next start
    # removes: the kernel kills it with the hub.
    proc = await asyncio.create_subprocess_exec(
        *dying_with_parent(list(argv), "KILL"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        # A job cancelled while its images are made: no qemu-img may finish after
        # the job's folder is removed.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise ImageError(f"{argv[0]} failed: {message[-1] if message else proc.returncode}")


async def create_image(path: Path, capacity: int, backing: Path | None = None) -> None:
    """A new qcow2 (an overlay on `backing`, the parent point's qcow2 of the same disk);
    StorageError when the repository refuses it (full, read-only, denied)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(path.parent, exc.errno or 0, exc.strerror or str(exc)) from None
    try:
        # C locale: the strerror text below is matched in English.
        # qemu-img 7.2 refuses -b without -F.
        chain = ["-b", str(backing), "-F", "qcow2"] if backing is not None else []
        await run_tool(
            "qemu-img", "create", "-q", "-f", "qcow2", *chain, str(path), str(capacity),
            env={**os.environ, "LC_ALL": "C"},
        )  # fmt: skip
    except ImageError as exc:
        code = next((c for c in _STORAGE_ERRNOS if os.strerror(c) in str(exc)), None)
        if code is None:
            raise
        raise StorageError(path, code, os.strerror(code)) from None


async def drop_backing(path: Path) -> None:
    """Make an overlay stand alone without reading it: only right when every cluster
    was written (a full the node copied into the overlay, zeroes included)."""
    await run_tool("qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", "", str(path))
